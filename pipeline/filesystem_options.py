"""Beam's filesystem options (S3 endpoint and keys, GCS project, ...) for every file access.

Beam hands pipeline options to its file layer (`FileSystems.set_options`) only when a Pipeline is
built, and only in workers it starts through `sdk_worker_main`. The launcher checks the output
folder and reads inputs before any Pipeline exists, and workers started by an SDK worker pool
(the shape Flink uses: `worker_pool_main`) skip `sdk_worker_main`: without this, an s3:// path
fails there with "Must provide one of client or options". So the launcher sets them before its
first file access (`use_filesystem_options`), and the DoFns of ours that touch files set them in
`setup` from the few options they were built with (`filesystem_options`, transforms.storage).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

__all__ = ["use_filesystem_options", "filesystem_options"]

# The option groups Beam's filesystems read (apache_beam.options.pipeline_options).
_FILESYSTEM_OPTION_CLASSES = ("S3Options", "GoogleCloudOptions", "AzureOptions", "HadoopFileSystemOptions")


def filesystem_options(pipeline_args: Sequence[str]) -> dict[str, Any]:
    """{option: value} for the options in `pipeline_args` that Beam's filesystems read (those
    given, not defaults): small and picklable, for `transforms.storage.use_options`."""
    from apache_beam.options import pipeline_options

    given = pipeline_options.PipelineOptions(list(pipeline_args)).get_all_options(drop_default=True)
    parser = argparse.ArgumentParser(add_help=False)
    for class_name in _FILESYSTEM_OPTION_CLASSES:
        getattr(pipeline_options, class_name)._add_argparse_args(parser)  # pylint: disable=protected-access
    names = {action.dest for action in parser._actions}  # pylint: disable=protected-access
    return {name: value for name, value in given.items() if name in names}


def use_filesystem_options(pipeline_args: Sequence[str]) -> None:
    """Gives Beam's file layer in this process the options in `pipeline_args`."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(pipeline_args)))
