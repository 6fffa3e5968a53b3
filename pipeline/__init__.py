"""Launcher side: configuration, planning, pipeline construction, run manifest and CLI."""

from pipeline.version import __version__

__all__ = ["__version__"]
