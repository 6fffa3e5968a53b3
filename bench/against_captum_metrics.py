"""The quality audit's infidelity and sensitivity-max (attributions/quality) against the real
captum.metrics on a torch twin of a small model (docs/quality.md). Not part of the test suite:
it needs torch and captum, which the project does not depend on. In a separate environment:

    python3 -m venv /tmp/captum-venv && /tmp/captum-venv/bin/pip install torch captum numpy
    /tmp/captum-venv/bin/python bench/against_captum_metrics.py     # exit 0: they agree

All inputs and draws lie on a 2^-16 grid with |value| < 8, so the float32 casts in our code and
x -/+ d are exact; the remaining difference is float64 rounding only. Measured 2026-12-02 with
torch 2.15.0, captum 0.9.0: largest relative difference 3.2e-15 (infidelity), 2.8e-14
(sensitivity_max), one and two inputs.
"""
import importlib.util
import os
import sys

import numpy as np
import torch
import captum
from captum.metrics import infidelity as c_infidelity, sensitivity_max as c_sensitivity_max
from captum.attr import Saliency


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
our_inf = load("our_inf", f"{REPO}/attributions/quality/infidelity.py").infidelity
our_sens = load("our_sens", f"{REPO}/attributions/quality/sensitivity.py").sensitivity_max
assert "tensorflow" not in sys.modules

torch.set_default_dtype(torch.float64)
GRID = 2.0 ** -16


def grid(a):
    return np.round(np.asarray(a) / GRID) * GRID


rng = np.random.default_rng(1234)
torch.manual_seed(0)
R, S = 6, 7
RTOL = 1e-6
results = {}


def rel(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)))


def report(name, ours, theirs):
    r = rel(ours, theirs)
    ok = np.allclose(ours, theirs, rtol=RTOL, atol=0)
    results[name] = (r, ok)
    print(f"{name:45s} max rel diff {r:.3e}  {'AGREE' if ok else 'DISAGREE'}")
    print("   ours  ", np.array2string(np.asarray(ours), precision=8))
    print("   captum", np.array2string(np.asarray(theirs), precision=8))


# ---------------------------------------------------------------- case 1: one input (R, 5)
class Net(torch.nn.Module):
    def __init__(self, d_in):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(d_in, 8), torch.nn.Linear(8, 3)

    def forward(self, *xs):
        x = torch.cat([t.reshape(t.shape[0], -1) for t in xs], dim=1)
        return self.l2(torch.tanh(self.l1(x)))


def twin(model):
    W1, b1 = model.l1.weight.detach().numpy(), model.l1.bias.detach().numpy()
    W2, b2 = model.l2.weight.detach().numpy(), model.l2.bias.detach().numpy()

    def logits_and_grad(xs, targets):
        rows = len(xs[0])
        flat = np.concatenate([np.asarray(x, np.float64).reshape(rows, -1) for x in xs], axis=1)
        h = np.tanh(flat @ W1.T + b1)
        out = h @ W2.T + b2
        t = np.resize(targets, rows)  # targets tile in sample-major order
        g = ((W2[t] * (1 - h ** 2)) @ W1)  # d out[t] / d flat
        return out[np.arange(rows), t], g

    return logits_and_grad


def run_case(label, shapes):
    d_in = sum(int(np.prod(s)) for s in shapes)
    model = Net(d_in).double()
    lg = twin(model)
    xs = tuple(grid(rng.normal(size=(R, *s))) for s in shapes)
    targets = rng.integers(0, 3, size=R)
    A = tuple(grid(rng.normal(size=(R, *s))) for s in shapes)
    inf_draws = [tuple(grid(0.3 * rng.normal(size=(R, *s))) for s in shapes) for _ in range(S)]  # [s][i] (R, *shape)
    sens_draws = [tuple(grid(rng.uniform(-0.02, 0.02, size=(R, *s))) for s in shapes) for _ in range(S)]

    tx = tuple(torch.tensor(x) for x in xs)
    tA = tuple(torch.tensor(a) for a in A)
    tt = torch.tensor(targets)
    single = len(shapes) == 1

    def captum_layout(draws, i):  # example-major: row r, sample s at r*S + s
        return torch.tensor(np.stack([d[i] for d in draws], axis=1).reshape(R * S, *shapes[i]))

    # ---- infidelity
    calls = []

    def perturb_func(inputs):
        inputs = (inputs,) if single else inputs
        calls.append(1)
        assert all(tuple(t.shape) == (R * S, *s) for t, s in zip(inputs, shapes)), [t.shape for t in inputs]
        for i, x in enumerate(tx):
            assert torch.equal(inputs[i], x.repeat_interleave(S, dim=0))
        noise = tuple(captum_layout(inf_draws, i) for i in range(len(shapes)))
        pert = tuple(x - n for x, n in zip(inputs, noise))
        return (noise[0], pert[0]) if single else (noise, pert)

    def score(inputs):
        return lg(inputs, targets)[0]

    for normalize in (False, True):
        calls.clear()
        theirs = c_infidelity(model, perturb_func, tx[0] if single else tx, tA[0] if single else tA,
                              target=tt, n_perturb_samples=S, normalize=normalize).numpy()
        assert len(calls) == 1
        for spc in (1, 3):
            res = our_inf(score, xs, A, lambda s: inf_draws[s], S, samples_per_call=spc)
            ours = res.normalized if normalize else res.infidelity
            report(f"[{label}] infidelity normalize={normalize} spc={spc}", ours, theirs)

    # ---- sensitivity_max with Saliency (abs gradient)
    sal = Saliency(model)
    calls.clear()

    def sens_perturb(inputs):
        inputs = (inputs,) if single else inputs
        calls.append(1)
        assert all(tuple(t.shape) == (R * S, *s) for t, s in zip(inputs, shapes))
        out = tuple(x + captum_layout(sens_draws, i) for i, x in enumerate(inputs))
        return out[0] if single else out

    theirs = c_sensitivity_max(sal.attribute, tx[0] if single else tx, perturb_func=sens_perturb,
                               n_perturb_samples=S, target=tt).numpy()
    assert len(calls) == 1

    def explain(inputs):
        rows = len(inputs[0])
        g = np.abs(lg(inputs, targets)[1])
        out, k = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(g[:, k:k + n].reshape(rows, *s))
            k += n
        return tuple(out)

    # sanity: twin gradient == captum Saliency at x
    sal_x = sal.attribute(tx[0] if single else tx, target=tt)
    sal_x = (sal_x,) if single else sal_x
    for a, b in zip(explain(xs), sal_x):
        assert np.allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)
    ours = our_sens(explain, xs, explain(xs), lambda s: sens_draws[s], S)
    report(f"[{label}] sensitivity_max (Saliency, fro)", ours, theirs)


run_case("1 input (R,5)", [(5,)])
run_case("2 inputs (R,5)+(R,2,3)", [(5,), (2, 3)])

print(f"\ntorch {torch.__version__}, captum {captum.__version__}, numpy {np.__version__}")
bad = [k for k, (_, ok) in results.items() if not ok]
print("ALL AGREE" if not bad else f"DISAGREE: {bad}")
sys.exit(1 if bad else 0)
