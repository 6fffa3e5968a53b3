"""The methods by family: which settings, output columns and summaries each one has. No TensorFlow
import (the launcher's config checks read it)."""

__all__ = ["METHODS", "COMPLETENESS_METHODS", "SAMPLING_METHODS", "PLAYER_METHODS", "BASELINE_METHODS", "STDERR_METHODS",
           "XLA_METHODS"]

METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "expected_gradients", "grad_cam",
           "sampled_shapley", "kernel_shap", "occlusion")
# Methods with a completeness axiom (sum of attributions = F(x) - F(reference)): their rows carry
# convergence_delta and completeness_error, and their summaries the completeness distribution.
COMPLETENESS_METHODS = ("integrated_gradients", "expected_gradients", "sampled_shapley", "kernel_shap")
# Methods that draw random numbers per row, seeded from the record's key (batch invariant).
SAMPLING_METHODS = ("smoothgrad", "expected_gradients", "sampled_shapley", "kernel_shap")
# Methods that switch input elements ("players", attributions.players) between the row and a
# reference instead of following gradients: any loadable model, differentiable or not.
PLAYER_METHODS = ("sampled_shapley", "kernel_shap", "occlusion")
# Methods that take a baseline: integrated gradients' path start; the value absent players take.
BASELINE_METHODS = ("integrated_gradients", "sampled_shapley", "occlusion")
# Monte-Carlo methods whose rows carry attribution_stderr (the largest per-feature standard error).
STDERR_METHODS = ("expected_gradients", "sampled_shapley", "kernel_shap")
# Methods whose cost is the model's gradients (ModelFunctions.gradients / path_gradients): what
# XLA compiles (attributions.xla_check). The others call the model forward only, or Grad-CAM's own.
XLA_METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "expected_gradients")
