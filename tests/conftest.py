"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No test runs on Google's cloud: google-auth need not probe for a GCE metadata server (read when
# google.auth is first imported; each probe costs seconds before "Connecting anonymously").
os.environ.setdefault("NO_GCE_CHECK", "true")

import numpy as np
import pytest

from helpers import linear_weights, save_linear_model, write_tabular_parquet


# The quality audit (pipeline.quality) explains 256 rows again on every launch: 17 % more time
# over tests/pipeline/test_run.py and test_image_runs.py, measured. The tests of the audit ask for
# its real default with the `quality_audit_default` fixture (or give --quality-rows); the others
# run as if --quality-rows 0 were given. Set here, at import, so that module- and session-scoped
# fixtures see it too.
import pipeline.config  # noqa: E402

_REAL_DEFAULT_QUALITY_ROWS = pipeline.config.DEFAULT_QUALITY_ROWS
pipeline.config.DEFAULT_QUALITY_ROWS = 0
# Likewise XLA (attributions.xla_check): under 'auto' each run times XLA against TensorFlow's kernels
# on its first batch and keeps the faster, so a test comparing two runs could see two paths. Runs
# built in the tests use the kernels unless they ask for XLA (--xla auto|on): tests/pipeline/test_xla.py,
# test_estimate.py. (CI's tests took 18 min 48 s with every run on 'auto', 18 min 37 s with this.)
pipeline.config.DEFAULT_XLA = "off"


@pytest.fixture
def quality_audit_default(monkeypatch):
    """Runs built in this test audit quality by default, as outside the tests."""
    monkeypatch.setattr(pipeline.config, "DEFAULT_QUALITY_ROWS", _REAL_DEFAULT_QUALITY_ROWS)
    return _REAL_DEFAULT_QUALITY_ROWS


@pytest.fixture
def linear_model(tmp_path):
    weights, bias = linear_weights()
    return save_linear_model(tmp_path / "linear.keras", weights, bias), weights, bias


@pytest.fixture
def tabular_data(tmp_path):
    rng = np.random.default_rng(7)
    features = rng.normal(size=(40, 6)).astype(np.float32)
    ids = np.arange(1000, 1040, dtype=np.int64)
    labels = rng.integers(0, 3, size=40)
    path = write_tabular_parquet(tmp_path / "data.parquet", features, ids=ids, labels=labels)
    return path, features, ids, labels


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory):
    """(model path, uint8 images (300, 16, 16, 1), labels): a small CNN trained on scikit-learn's
    digits upscaled to 16 x 16, shared by the image tests (training takes seconds)."""
    from pipeline.demo import digits_uint8, train_digits_cnn

    images, labels = digits_uint8(300)
    path = train_digits_cnn(tmp_path_factory.mktemp("digits") / "digits_cnn.keras", images, labels)
    return path, images, labels
