"""`python -m pipeline ...` is the same as `attribution-pipeline ...`."""

from pipeline.cli import run_program

run_program()
