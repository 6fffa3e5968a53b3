"""Beam's filesystems for everything the pipeline reads and writes, on the launcher and workers.

`use_options` gives Beam's file layer the filesystem options (S3 endpoint and keys, GCS project)
where Beam did not (pipeline.filesystem_options says why); DoFns that touch files call it in
`setup`. `BeamModelStorage` reads a model (attributions.loading.ModelStorage) through Beam's
filesystems, for s3:// and gs:// paths.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Mapping, Optional

from apache_beam.io.filesystems import FileSystems

__all__ = ["use_options", "BeamModelStorage", "model_storage", "read_file_or_none"]


def use_options(options: Optional[Mapping[str, Any]]) -> None:
    """Sets Beam's filesystem options in this process unless Beam already has (its own workers,
    the launcher after pipeline.filesystem_options.use_filesystem_options)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    if options and FileSystems._pipeline_options is None:  # pylint: disable=protected-access  # Beam's only record of it
        FileSystems.set_options(PipelineOptions.from_dictionary(dict(options)))


class BeamModelStorage:
    """A model's files through Beam's FileSystems (attributions.loading.ModelStorage)."""

    def exists(self, path: str) -> bool:
        return FileSystems.exists(path) or self.isdir(path)

    def isdir(self, path: str) -> bool:
        return bool(self.files_under(path))

    def files_under(self, directory: str) -> list[str]:
        root = directory.rstrip("/") + "/"
        return [m.path for m in FileSystems.match([root + "**"])[0].metadata_list if m.path.startswith(root)]

    def open(self, path: str) -> BinaryIO:
        return FileSystems.open(path, mime_type="application/octet-stream", compression_type="uncompressed")


def read_file_or_none(path: str) -> Optional[bytes]:
    """The bytes of a file through Beam's filesystems; None when there is none at `path`."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
        return handle.read()


def model_storage(path: str) -> Optional[BeamModelStorage]:
    """Beam's filesystems for a path with a scheme (s3://, gs://, ...); None (tf.io.gfile) for local ones."""
    return BeamModelStorage() if "://" in path else None
