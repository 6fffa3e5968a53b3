"""Attribution methods in plain TensorFlow/numpy, with no Beam import.

Every method is a pure function of `ModelFunctions` (the compiled model contract), a batch of
inputs (one (B, *shape) array per model input) and per-example targets, and returns `Attributions`.

The names below are imported on first use (PEP 562): importing a light submodule such as
`attributions.integration_rules` (the launcher's config checks) must not import TensorFlow.
"""

import importlib
from typing import Any

_WHERE = {
    "Attributions": "attributions.result",
    "ModelFunctions": "attributions.model_functions",
    "TargetSpec": "attributions.targets",
    "build_model_functions": "attributions.model_functions",
    "expand_targets": "attributions.targets",
    "expected_gradients": "attributions.expected_gradients",
    "gradient": "attributions.gradient",
    "gradient_x_input": "attributions.gradient_x_input",
    "integrated_gradients": "attributions.integrated_gradients",
    "integration_rule": "attributions.integration_rules",
    "smoothgrad": "attributions.smoothgrad",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'attributions' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
