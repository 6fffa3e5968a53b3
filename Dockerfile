# Beam SDK worker image with this package installed: usable as Dataflow's --sdk_container_image
# and as the SDK harness image of a Flink/Spark portable runner.
# The Beam version here must equal setup.py's apache-beam pin (tests/test_packaging.py checks it).
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/attribution-pipeline
COPY setup.py README.md ./
COPY attributions ./attributions
COPY audit ./audit
COPY pipeline ./pipeline
COPY transforms ./transforms
# tests/test_packaging.py resolves these requirements with `pip install --dry-run` (no Docker here).
RUN pip install --no-cache-dir ".[gcp]" && pip check

ENTRYPOINT ["/opt/apache/beam/boot"]
