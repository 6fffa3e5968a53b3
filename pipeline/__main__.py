"""`python -m pipeline ...` is the same as `attribution-pipeline ...`."""

import sys

from pipeline.cli import main

sys.exit(main())
