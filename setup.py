"""Installable package; also what Dataflow stages with --setup_file.

The Beam version is pinned to one minor release: the Dockerfile's base image
(apache/beam_python3.11_sdk:<version>) must carry the same SDK as the launcher; keep them identical.
"""

import pathlib
import re

from setuptools import find_packages, setup

VERSION = re.search(
    r'__version__ = "([^"]+)"', pathlib.Path(__file__).with_name("pipeline").joinpath("version.py").read_text()
).group(1)

setup(
    name="attribution-pipeline",
    version=VERSION,
    description="Batch feature attributions (gradients, integrated gradients, SmoothGrad, expected "
    "gradients) for TensorFlow/Keras models on Apache Beam.",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["attributions", "attributions.*", "audit", "audit.*", "pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=[
        "apache-beam>=2.77.0,<2.78",  # same version as the Dockerfile's base image
        "tensorflow-cpu>=2.18,<2.22; platform_machine == 'x86_64'",
        "tensorflow>=2.18,<2.22; platform_machine != 'x86_64'",
        "keras>=3.6,<4",
        "numpy>=1.26,<3",
        "pyarrow>=14,<26",
        "pyyaml>=6,<7",
        "matplotlib>=3.8,<4",  # the HTML report's plots (imported only by `report`)
        "threadpoolctl>=3.1,<4",  # one BLAS thread for the summaries' small matrix products
        "rich>=13,<16",  # the progress bar on a terminal (Keras depends on it too)
    ],
    extras_require={
        # The demo and the tests train small models on scikit-learn's bundled datasets, and on the
        # Palmer penguins CSV that palmerpenguins ships (categorical inputs; read offline); the
        # tests also read the VADER lexicon vaderSentiment ships (human-rated words, for text).
        "demo": ["scikit-learn>=1.4,<2", "palmerpenguins>=0.1.6,<0.2"],
        # saliency (PAIR): tests check our integrated gradients against its implementation;
        # apache-beam[gcp]: the DataflowRunner dry-run tests; scipy (with scikit-learn): rank tests;
        # apache-beam[aws] and moto[server]: runs against a real S3 server started on loopback;
        # mkdocs with the Material theme: the documentation site is built with --strict; shap: our
        # kernel_shap against its KernelExplainer (0.51 is the last release for Python 3.11).
        "test": ["scikit-learn>=1.4,<2", "palmerpenguins>=0.1.6,<0.2", "vaderSentiment>=3.3.2,<3.4", "pytest>=8,<10", "hypothesis>=6.100,<7", "saliency==0.2.1",
                 "apache-beam[gcp,aws]>=2.77.0,<2.78", "moto[server]>=5.1,<6",
                 "mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "shap>=0.51,<0.52"],
        # The documentation site (mkdocs.yml): `mkdocs build --strict` or `mkdocs serve`; the tests build it too.
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"],
        # bench/throughput.py compares integrated gradients with PAIR's saliency package,
        # bench/kernel_shap_vs_shap.py kernel_shap with shap's KernelExplainer.
        "bench": ["scikit-learn>=1.4,<2", "saliency==0.2.1", "shap>=0.51,<0.52"],
        # gs:// paths (inputs, output, model) through Beam's GCS filesystem.
        "gcp": ["apache-beam[gcp]>=2.77.0,<2.78", "tensorflow-io-gcs-filesystem>=0.37"],
        # s3:// paths (inputs, output, model) through Beam's S3 filesystem (boto3).
        "aws": ["apache-beam[aws]>=2.77.0,<2.78"],
    },
    entry_points={"console_scripts": ["attribution-pipeline=pipeline.cli:run_program"]},
)
