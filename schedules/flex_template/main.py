"""Dataflow Flex Template entry point: the template's parameters arrive as --name=value flags.

The launcher image (schedules/flex_template/Dockerfile) sets FLEX_TEMPLATE_PYTHON_PY_FILE to this
file; Dataflow runs it with the template parameters and the runner options (--runner,
--project, --region, --temp_location, ...), all of which `attribution-pipeline run` accepts.
"""

import sys

from pipeline.cli import run_program

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "run", *sys.argv[1:]]
    run_program()
