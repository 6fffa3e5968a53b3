"""Loaded by every Python process started with this folder on PYTHONPATH (the SDK worker pool
and its workers in the GCS portable-path test): fake-gcs-server's batch workaround
(tests/gcs_emulator.py) in those processes too. Tests only, never the product."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for gcs_emulator

try:
    from gcs_emulator import add_content_ids

    add_content_ids()
except ImportError:  # google-cloud-storage absent: nothing to patch
    pass
