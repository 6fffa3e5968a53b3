"""Attribution methods in plain TensorFlow/numpy, with no Beam import.

Every method is a pure function of `ModelFunctions` (the compiled model contract), a batch of
inputs (one (B, *shape) array per model input) and per-example targets, and returns `Attributions`.
"""

from attributions.expected_gradients import expected_gradients
from attributions.gradient import gradient
from attributions.gradient_x_input import gradient_x_input
from attributions.integrated_gradients import integrated_gradients
from attributions.integration_rules import integration_rule
from attributions.model_functions import ModelFunctions, build_model_functions
from attributions.result import Attributions
from attributions.smoothgrad import smoothgrad
from attributions.targets import TargetSpec, expand_targets

__all__ = [
    "Attributions",
    "ModelFunctions",
    "TargetSpec",
    "build_model_functions",
    "expand_targets",
    "expected_gradients",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "integration_rule",
    "smoothgrad",
]
