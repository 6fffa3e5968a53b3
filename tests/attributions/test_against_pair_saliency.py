"""Our integrated gradients against PAIR's `saliency` implementation on the same model.

PAIR averages the gradients at linspace(0, 1, n) with equal weights; our trapezoid rule uses the
same points with half weights at both ends, so ours = (n * PAIR - (g(b) + g(x)) * (x - b) / 2) / (n - 1).
"""

import numpy as np
import pytest
import saliency.core as saliency

from attributions.integrated_gradients import integrated_gradients
from attributions.loading import load_model
from helpers import save_nonlinear_model


@pytest.mark.parametrize("steps", [8, 25])
def test_trapezoid_ig_matches_pair_saliency_exactly(tmp_path, steps):
    fns = load_model(save_nonlinear_model(tmp_path / "m.keras")).model_functions()
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    baseline = np.full(5, 0.25, np.float32)
    targets = np.array([0, 1, 2, 3, 0, 1], np.int32)

    def call_model(batch, call_model_args=None, expected_keys=None):
        _, (grads,), _ = fns.gradients([batch], np.full(len(batch), call_model_args["target"], np.int32))
        return {saliency.base.INPUT_OUTPUT_GRADIENTS: grads}

    pair = np.stack([
        saliency.IntegratedGradients().GetMask(x[i], call_model, {"target": int(targets[i])}, x_baseline=baseline, x_steps=steps)
        for i in range(len(x))
    ])
    ours = integrated_gradients(fns, [x], [baseline], targets, steps=steps, rule="riemann_trapezoid").attributions[0]
    _, (g_baseline,), _ = fns.gradients([np.broadcast_to(baseline, x.shape)], targets)
    _, (g_input,), _ = fns.gradients([x], targets)
    expected = (steps * pair - (g_baseline + g_input) * (x - baseline) / 2) / (steps - 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
