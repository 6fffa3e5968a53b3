"""The container image and setup.py agree on the Beam version."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        return handle.read()


def test_dockerfile_beam_version_equals_setup_py_pin():
    image = re.search(r"^FROM apache/beam_python3\.11_sdk:(\S+)$", _read("Dockerfile"), re.M).group(1)
    low, high = re.search(r'"apache-beam>=([\d.]+),<([\d.]+)"', _read("setup.py")).groups()
    assert image == low, f"Dockerfile uses Beam {image}, setup.py pins {low}"
    assert high.split(".")[:2] == [low.split(".")[0], str(int(low.split(".")[1]) + 1)]


def test_dockerfile_starts_the_beam_boot_entrypoint():
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in _read("Dockerfile")
    assert "pip check" in _read("Dockerfile")
