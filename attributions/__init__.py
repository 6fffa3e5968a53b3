"""Attribution methods in plain TensorFlow/numpy, with no Beam import.

Every method is a pure function of `ModelFunctions` (the compiled model contract), a batch of
inputs (one (B, *shape) array per model input) and per-example targets, and returns `Attributions`.
Each lives in the module of its name, imported from there:

    from attributions.integrated_gradients import integrated_gradients
    from attributions.gradient import gradient   # also gradient_x_input, smoothgrad, expected_gradients

The shared types below are imported on first use (PEP 562), so that importing a light module
such as `attributions.integration_rules` (the launcher's config checks) does not import
TensorFlow. (The methods cannot be re-exported here the same way: a function named like its
module is shadowed by the module as soon as anything imports that module.)
"""

import importlib
from typing import Any

_WHERE = {
    "Attributions": "attributions.result",
    "ModelFunctions": "attributions.model_functions",
    "TargetSpec": "attributions.targets",
    "build_model_functions": "attributions.model_functions",
    "expand_targets": "attributions.targets",
    "integration_rule": "attributions.integration_rules",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'attributions' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
