"""KernelSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions",
NeurIPS; arXiv:1705.07874), as the `shap` package's KernelExplainer computes it.

The game: P players (attributions.players), a row x, a background of R rows r with weights w_r
(sum 1; uniform unless a summary gives them, `background_summary`), and the value of a coalition
S (a bool (P,) vector, True = the player takes the row's value):

    v(S) = sum_r w_r f(x_S, r_{not S})[target]          v(empty) = E_w f(r),  v(all) = f(x)

The Shapley values phi of v are the solution of a weighted least squares over coalitions
(Charnes et al. 1988; Lundberg & Lee 2017, Theorem 2):

    phi = argmin sum_S k(S) (v(S) - v(empty) - sum_{i in S} phi_i)^2   s.t. sum_i phi_i = v(all) - v(empty)

with the Shapley kernel k(S) = (M - 1) / (C(M, |S|) |S| (M - |S|)) over the 2^M - 2 proper, non-
empty coalitions. Summed over all of them the solution is exactly the Shapley values; KernelSHAP
uses a budget of n coalitions chosen as shap's KernelExplainer chooses them (shap/explainers/
_kernel.py, `explain`):

  * sizes s = 1 .. ceil((M-1)/2), each with a size weight proportional to (M-1)/(s(M-s)), doubled
    for s < M/2 (a size and its complement size M - s are handled together);
  * from the smallest size up, a size whose every coalition (and every complement) fits its share
    of the remaining budget is enumerated completely, each coalition weighted by its exact kernel
    weight; with a budget of 2^M - 2 or more every size is enumerated and the result is the exact
    Shapley value of v (up to float rounding);
  * the rest of the budget is drawn: a size from the remaining size weights (halved for paired
    sizes), then a uniform coalition of that size, and with it its complement (paired sampling);
    a coalition drawn again adds 1 to its count instead of costing a model evaluation; draws stop
    when n distinct coalitions are in (or after 4n draws). The drawn coalitions share the kernel
    weight the enumerated sizes left, in proportion to their counts.

The constraint is enforced exactly (a Lagrange multiplier: the KKT system
[[Z'WZ, 1], [1', 0]] [phi; lambda] = [Z'Wy; v(all) - v(empty)], the same optimum as shap's
elimination of one variable), so sum(phi) = f(x) - E_w f(r) holds to float rounding for every
row, sampled or not. Unlike shap's default (l1_reg="num_features(10)", which keeps at most 10
non-zero players by LARS) no feature selection is done: every varying player gets a value.

Players that do not vary (the row's elements equal those of every background row of weight > 0)
are dummies: their Shapley value is exactly 0, and they are left out of the regression as shap
leaves them out (shap compares with np.allclose; here equality is exact, so a dummy is a dummy of
v). M is the number of varying players of the row; M = 1 gets the whole output change.

Standard error: the drawn coalitions come from i.i.d. draws; they are cut into G = 10 groups of
consecutive draws (each coalition's count split by group), and the regression is solved again
without each group (delete-a-group jackknife, Efron 1982): var_i = (G-1)/G sum_g (phi_i(-g) -
mean_g phi_i(-g))^2. `stderr` is the largest per-player jackknife standard error of the row; 0 when
every coalition was enumerated, inf when fewer than 2 draws were made. The enumerated part carries
no sampling error and is kept in every jackknife solve.

Cost: n x R model evaluations per row (n = the row's coalitions, at most min(samples, 2^M - 2)).
All coalition points of a block of rows are evaluated together, at most max(chunk_size, R) points
per model call, so memory is bounded by the chunk size, not by rows x coalitions x R. A row costs
many evaluations (P = 30, R = 50: 105,400), so for small models the call overhead of 1024-point
calls dominates: on 2 cores a breast-cancer MLP ran 13.6 rows/s at chunk_size 1024, 34 at 16384
and 38 at 65536 (bench/kernel_shap_vs_shap.py); give big models a chunk they fit.
Draws come from a generator seeded by (seed, example seed): a row's result does not depend on its
batch.

`background_summary` summarizes a background sample with k-means as shap.kmeans does (centers
snapped to real data values per element, weights = cluster sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Callable, Optional, Sequence

import numpy as np

from attributions.model_functions import ModelFunctions
from attributions.players import blend, player_count, spread
from attributions.result import Attributions, attribution_mass, attribution_sums, completeness_error
from attributions.sampling import example_rng, validate_chunk_size

__all__ = ["kernel_shap", "background_summary", "default_samples", "EXTRA_SAMPLES", "JACKKNIFE_GROUPS"]

# shap's nsamples="auto": 2 P + 2048 coalitions. P <= 11 players are enumerated exactly (2^11 - 2 <
# 2 x 11 + 2048); beyond, n stays >> P so the P-1 free coefficients are well determined.
EXTRA_SAMPLES = 2048
# Groups of draws of the delete-a-group jackknife (module docstring).
JACKKNIFE_GROUPS = 10
# Coalition entries (rows x coalitions x players) held at once: rows are designed in blocks.
DESIGN_BUDGET = 1 << 24
# shap's tolerance when deciding that a size fits its budget share.
_FITS = 1.0 - 1e-8


def default_samples(num_players: int) -> int:
    """Coalitions per row by default: shap's "auto", 2 P + 2048."""
    return 2 * int(num_players) + EXTRA_SAMPLES


@dataclass(frozen=True)
class _Design:
    """One row's coalitions over its M varying players.

    masks: bool (n, M); weights: float64 (n,) regression weights (enumerated: kernel weights;
    drawn: counts x the weight the enumerated sizes left / total count); drawn: bool (n,);
    group_counts: float64 (n, G) counts per jackknife group (zero rows for enumerated coalitions),
    G = 0 when nothing is drawn; left: the kernel weight the drawn coalitions share.
    """

    masks: np.ndarray
    weights: np.ndarray
    drawn: np.ndarray
    group_counts: np.ndarray
    left: float


def _design(rng: np.random.Generator, players: int, samples: int) -> _Design:
    """shap's KernelExplainer coalition choice for M = `players` >= 2 (module docstring)."""
    m = players
    budget = min(samples, 2**m - 2) if m <= 30 else samples
    num_sizes = (m - 1 + 1) // 2  # ceil((M-1)/2)
    num_paired = (m - 1) // 2  # floor((M-1)/2): sizes below M/2
    size_weight = np.array([(m - 1.0) / (s * (m - s)) for s in range(1, num_sizes + 1)])
    size_weight[:num_paired] *= 2
    size_weight /= size_weight.sum()

    masks, weights = [], []
    left_budget, remaining, full = float(budget), size_weight.copy(), 0
    for s in range(1, num_sizes + 1):
        count = comb(m, s) * (2 if s <= num_paired else 1)
        if left_budget * remaining[s - 1] / count < _FITS:
            break
        full += 1
        left_budget -= count
        if remaining[s - 1] < 1.0:
            remaining /= 1.0 - remaining[s - 1]
        w = size_weight[s - 1] / comb(m, s) / (2 if s <= num_paired else 1)
        chosen = _all_subsets(m, s)  # (C(M, s), M)
        masks.append(chosen)
        if s <= num_paired:
            masks.append(~chosen)
        weights.append(np.full(count, w))
    enumerated = sum(len(x) for x in masks)
    weight_left = float(size_weight[full:].sum())
    to_draw = budget - enumerated
    if full == num_sizes or to_draw <= 0:
        masks = np.concatenate(masks) if masks else np.zeros((0, m), bool)
        n = len(masks)
        return _Design(masks, np.concatenate(weights) if weights else np.zeros(0), np.zeros(n, bool),
                       np.zeros((n, 0)), 0.0)

    drawn_masks, counts = _draw(rng, m, to_draw, size_weight, full, num_paired)  # (d, M), (d, G)
    total = counts.sum()
    all_masks = np.concatenate(masks + [drawn_masks]) if masks else drawn_masks
    all_weights = np.concatenate(weights + [counts.sum(axis=1) * weight_left / total])
    group_counts = np.concatenate([np.zeros((enumerated, counts.shape[1])), counts])
    drawn = np.concatenate([np.zeros(enumerated, bool), np.ones(len(drawn_masks), bool)])
    return _Design(all_masks, all_weights, drawn, group_counts, weight_left)


def _all_subsets(m: int, s: int) -> np.ndarray:
    """bool (C(m, s), m): every coalition of size s, in itertools.combinations order."""
    from itertools import combinations

    index = np.array(list(combinations(range(m), s)), dtype=np.int64)  # (C, s)
    masks = np.zeros((len(index), m), bool)
    np.put_along_axis(masks, index, True, axis=1)
    return masks


def _draw(rng: np.random.Generator, m: int, wanted: int, size_weight: np.ndarray, full: int,
          num_paired: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired draws until `wanted` distinct coalitions (or 4 x wanted draws): bool (d, M) masks
    and float64 (d, G) counts per jackknife group of consecutive draws."""
    p = size_weight.copy()
    p[:num_paired] /= 2  # a paired draw adds two coalitions
    p = p[full:] / p[full:].sum()
    seen: dict[bytes, int] = {}
    rows: list[np.ndarray] = []  # distinct coalitions, a paired one followed by its complement
    partner: list[int] = []  # per row: the row whose counts it shares (itself, or its coalition)
    owners: list[int] = []  # per draw: the row of its coalition
    left, made = wanted, 0
    while left > 0 and made < 4 * wanted:
        batch = min(max(left // 2 + 1, 16), 4 * wanted - made)
        sizes = rng.choice(len(p), batch, p=p) + full + 1  # (batch,)
        keys = rng.random((batch, m))  # (batch, M): a uniform subset = the `size` smallest keys
        threshold = np.take_along_axis(np.sort(keys, axis=1), (sizes - 1)[:, None], axis=1)  # (batch, 1)
        batch_masks = keys <= threshold  # (batch, M)
        packed = np.packbits(batch_masks, axis=1)
        for d in range(batch):
            made += 1
            key = packed[d].tobytes()
            row = seen.get(key)
            if row is None:
                row = seen[key] = len(rows)
                rows.append(batch_masks[d])
                partner.append(row)
                left -= 1
                # shap adds the complement of a paired size with the same counts; it is missing
                # when the budget ran out between the two.
                if left > 0 and sizes[d] <= num_paired:
                    rows.append(~batch_masks[d])
                    partner.append(row)
                    left -= 1
            owners.append(row)
            if left <= 0:
                break
    draws = len(owners)
    groups = min(JACKKNIFE_GROUPS, draws)
    counts = np.zeros((len(rows), groups))  # (d, G)
    np.add.at(counts, (np.array(owners), np.arange(draws) * groups // draws), 1.0)  # consecutive draws per group
    return np.array(rows), counts[np.array(partner)]


def _solve(masks: np.ndarray, weights: np.ndarray, y: np.ndarray, total: float) -> np.ndarray:
    """min sum_k weights_k (y_k - masks_k . phi)^2 s.t. sum(phi) = total; float64 (M,).

    masks (n, M) float64, weights (n,), y (n,). Rank-deficient systems (fewer distinct coalitions
    than players) get the least-squares minimum-norm solution, as shap falls back to lstsq."""
    m = masks.shape[1]
    weighted = masks * weights[:, None]  # (n, M)
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = weighted.T @ masks
    kkt[:m, m] = kkt[m, :m] = 1.0
    rhs = np.append(weighted.T @ y, total)  # (M+1,)
    return _kkt_solve(kkt, rhs)[:m]


def _kkt_solve(kkt: np.ndarray, rhs: np.ndarray, conditioned: Optional[bool] = None) -> np.ndarray:
    """The KKT system's solution; least squares (minimum norm) when it is singular or ill-
    conditioned (condition number >= 1e12, an SVD; `conditioned` gives the verdict instead: the
    jackknife's systems are perturbations of the row's main one, whose verdict they reuse)."""
    if conditioned is None:
        conditioned = bool(np.linalg.cond(kkt) < 1e12)
    if conditioned:
        try:
            solution = np.linalg.solve(kkt, rhs)
            if np.all(np.isfinite(solution)):
                return solution
        except np.linalg.LinAlgError:
            pass
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0]


def _row_values(design: _Design, values: np.ndarray, empty: float, total: float) -> tuple[np.ndarray, float]:
    """Per-player values (M,) and their largest jackknife standard error for one row.

    values: v(S) per coalition (n,); empty: v(empty); total: v(all) - v(empty)."""
    z = design.masks.astype(np.float64)  # (n, M)
    y = values - empty  # (n,)
    groups = design.group_counts.shape[1]
    if not design.drawn.any():
        return _solve(z, design.weights, y, total), 0.0
    m = z.shape[1]
    enumerated = ~design.drawn
    fixed = z[enumerated] * design.weights[enumerated, None]  # (e, M)
    fixed_gram, fixed_rhs = fixed.T @ z[enumerated], fixed.T @ y[enumerated]  # (M, M), (M,)
    drawn_z, drawn_y, counts = z[design.drawn], y[design.drawn], design.group_counts[design.drawn]  # (d, M), (d,), (d, G)
    # Per group, only its coalitions (a coalition drawn once is in one group): ~one d x M^2 product in all.
    gram_g, rhs_g = np.zeros((groups, m, m)), np.zeros((groups, m))
    for g in range(groups):
        inside = counts[:, g] > 0
        weighted = drawn_z[inside] * counts[inside, g, None]  # (d_g, M)
        gram_g[g], rhs_g[g] = weighted.T @ drawn_z[inside], weighted.T @ drawn_y[inside]
    count_g = counts.sum(axis=0)  # (G,)

    conditioned = []  # the main system's verdict, reused by the jackknife's

    def solve_without(g: Optional[int]) -> np.ndarray:
        kept = count_g.sum() - (0.0 if g is None else count_g[g])
        gram, rhs = gram_g.sum(axis=0), rhs_g.sum(axis=0)
        if g is not None:
            gram, rhs = gram - gram_g[g], rhs - rhs_g[g]
        kkt = np.zeros((m + 1, m + 1))
        kkt[:m, :m] = fixed_gram + design.left / kept * gram
        kkt[:m, m] = kkt[m, :m] = 1.0
        if not conditioned:
            conditioned.append(bool(np.linalg.cond(kkt) < 1e12))
        return _kkt_solve(kkt, np.append(fixed_rhs + design.left / kept * rhs, total), conditioned[0])[:m]

    phi = solve_without(None)
    if groups < 2:
        return phi, float("inf")
    leave_out = np.stack([solve_without(g) for g in range(groups)])  # (G, M)
    variance = (groups - 1) / groups * ((leave_out - leave_out.mean(axis=0)) ** 2).sum(axis=0)  # (M,)
    return phi, float(np.sqrt(variance.max()))


def _validate(inputs: tuple, background: tuple, weights: np.ndarray, targets: np.ndarray, players: tuple,
              example_seeds: np.ndarray, samples: Optional[int]) -> int:
    """Checks the arguments; returns P."""
    if len(background) != len(inputs):
        raise ValueError(
            f"kernel_shap: background has {len(background)} inputs, the model {len(inputs)}: give one background "
            "array per model input, (R, *input_shape)."
        )
    if len(background[0]) < 1:
        raise ValueError(
            "kernel_shap: the background is empty (0 rows); v(S) averages the model over background rows, so give at "
            "least one (a sample of the training data, or background_summary(...) of one)."
        )
    for i, (x, r) in enumerate(zip(inputs, background)):
        if x.shape[1:] != r.shape[1:] or len(r) != len(background[0]) or len(x) != len(inputs[0]):
            raise ValueError(
                f"kernel_shap: input {i} is {x.shape} and its background {r.shape}: every input must be (B, *shape) and "
                f"its background (R, *shape) with the same shape and the same B and R across inputs."
            )
    if len(players) != len(inputs):
        raise ValueError(
            f"kernel_shap: {len(players)} player arrays for {len(inputs)} model inputs: give one int32 array per input "
            "(attributions.players.element_players(shapes) for one player per element)."
        )
    for i, (x, p) in enumerate(zip(inputs, players)):
        if np.shape(p) != x.shape[1:]:
            raise ValueError(
                f"kernel_shap: players of input {i} have shape {np.shape(p)}, the input's rows {x.shape[1:]}: a player "
                "array has the input's shape without the batch axis."
            )
    if weights.shape != (len(background[0]),) or not np.all(np.isfinite(weights)) or np.any(weights < 0) \
            or weights.sum() <= 0:
        raise ValueError(
            f"kernel_shap: background_weights must be {len(background[0])} finite, non-negative numbers with a positive "
            f"sum (one per background row); got shape {weights.shape}, sum {weights.sum() if weights.size else 0}."
        )
    if targets.shape != (len(inputs[0]),) or example_seeds.shape != (len(inputs[0]),):
        raise ValueError(
            f"kernel_shap: targets {targets.shape} and example_seeds {example_seeds.shape} must both be ({len(inputs[0])},), "
            "one per row."
        )
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2):
        raise ValueError(
            f"kernel_shap: samples (coalitions per row) must be an integer >= 2; got {samples!r}. Use None for the "
            f"default 2 P + {EXTRA_SAMPLES}; with fewer coalitions than players the regression is underdetermined."
        )
    return player_count(players)


def _varying(inputs: tuple, background: tuple, players: tuple, num_players: int, rows: slice) -> np.ndarray:
    """bool (b, P): players whose elements differ from some background row (the non-dummies)."""
    varying = np.zeros((rows.stop - rows.start, num_players), bool)
    for x, r, p in zip(inputs, background, players):
        flat_r, ids = r.reshape(len(r), -1), np.asarray(p).reshape(-1)  # (R, K), (K,)
        for b in range(rows.start, rows.stop):
            differs = (x[b].reshape(1, -1) != flat_r).any(axis=0)  # (K,)
            varying[b - rows.start, ids[differs]] = True
    return varying


def _coalition_values(fns: ModelFunctions, inputs: tuple, background: tuple, weights: np.ndarray, players: tuple,
                      owners: np.ndarray, coalitions: np.ndarray, targets: np.ndarray,
                      chunk_size: int) -> np.ndarray:
    """v(S) for each (row, coalition) pair: float64 (K,).

    owners: int (K,) row indices into `inputs`; coalitions: bool (K, P); targets: int32 (B,).
    Each model call holds max(1, chunk_size // R) pairs, i.e. at most max(chunk_size, R) points."""
    num_refs = len(background[0])
    pairs_per_call = max(1, chunk_size // num_refs)
    starts = range(0, len(owners), pairs_per_call)

    def evaluate(start: int) -> np.ndarray:
        rows, take = owners[start:start + pairs_per_call], coalitions[start:start + pairs_per_call]  # (k,), (k, P)
        # Per row: blend with the background rows as the "inputs" and the row as the one shared
        # reference, coalitions complemented: point (r, j) = where(S_j, x, r_r), built once, with
        # no repeated copies of x or of the background.
        segments = np.flatnonzero(np.diff(rows)) + 1
        bounds = list(zip([0, *segments], [*segments, len(rows)]))
        parts = [blend(background, tuple(x[rows[a]][None] for x in inputs), players,
                       # contiguous: blend's fancy indexing of a broadcast view costs a copy more
                       np.ascontiguousarray(np.broadcast_to(~take[None, a:b], (num_refs, b - a, take.shape[1]))))
                 for a, b in bounds]  # each (R * j, *shape) per input, index r * j + m
        points = parts[0] if len(parts) == 1 else tuple(np.concatenate(p) for p in zip(*parts))
        outputs = fns.predict(points)  # (k*R, C)
        picked, offset = [], 0
        for a, b in bounds:
            block = outputs[offset:offset + num_refs * (b - a), targets[rows[a]]].reshape(num_refs, b - a)  # (R, j)
            picked.append(weights @ block.astype(np.float64))  # (j,)
            offset += num_refs * (b - a)
        return np.concatenate(picked)  # (k,)

    results = list(fns.map(evaluate, iter(starts)))
    return np.concatenate(results) if results else np.zeros(0)


def kernel_shap(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    background: Sequence[np.ndarray],
    targets: np.ndarray,
    players: Sequence[np.ndarray],
    example_seeds: np.ndarray,
    samples: Optional[int] = None,
    seed: int = 0,
    chunk_size: int = 1024,
    background_outputs_mean: Optional[np.ndarray] = None,
    background_weights: Optional[np.ndarray] = None,
    mass: Callable[[tuple], np.ndarray] = attribution_mass,
) -> Attributions:
    """KernelSHAP values of B rows (module docstring).

    Args:
      inputs: one float32 array per model input, (B, *shape_i).
      background: one float32 array per model input, (R, *shape_i).
      targets: int32 (B,) output index explained; < 0 means the argmax of f(x).
      players: one int32 array per input, (*shape_i), values 0..P-1 (attributions.players).
      example_seeds: uint64 (B,), one per row (e.g. a hash of its key).
      samples: coalitions per row; None: 2 P + 2048 (shap's "auto"). Capped at 2^M - 2, where all
        coalitions are enumerated and the values are exact.
      chunk_size: model evaluations per call (a call holds at least one coalition's R points).
      background_outputs_mean: float (C,), the (weighted) mean model output over the background;
        computed here when None.
      background_weights: float (R,) >= 0, e.g. from `background_summary`; None: uniform.
      mass: as `expected_gradients`.
    Returns: Attributions with attributions (B, *shape_i) per input (spread over each player's
      elements), convergence_delta, output_change (f(x) - E_w f(r)), stderr (largest per-player
      jackknife standard error; 0 when enumerated), completeness_error, targets and target_scores
      (f(x)[target]), each (B,).
    """
    chunk_size = validate_chunk_size(chunk_size)
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    background = tuple(np.asarray(r, dtype=np.float32) for r in background)
    players = tuple(np.asarray(p) for p in players)
    targets = np.asarray(targets, dtype=np.int32).reshape(-1)
    example_seeds = np.asarray(example_seeds).reshape(-1)
    num_refs = len(background[0]) if background else 0
    weights = np.ones(num_refs) if background_weights is None else np.asarray(background_weights, np.float64).reshape(-1)
    if not inputs:
        raise ValueError("kernel_shap: no model inputs given; pass one (B, *shape) array per model input.")
    num_players = _validate(inputs, background, weights, targets, players, example_seeds, samples)
    weights = weights / weights.sum()
    keep = weights > 0  # zero-weight rows cost evaluations and change nothing
    background, weights = tuple(r[keep] for r in background), weights[keep]
    budget = default_samples(num_players) if samples is None else int(samples)

    outputs = fns.predict(inputs, chunk_size)  # (B, C)
    if np.any(targets >= outputs.shape[1]):
        raise ValueError(
            f"kernel_shap: targets go up to {targets.max()}, the model has {outputs.shape[1]} outputs: give indices "
            f"0..{outputs.shape[1] - 1} (or -1 for the argmax)."
        )
    targets = np.where(targets < 0, outputs.argmax(axis=1), targets).astype(np.int32)
    if background_outputs_mean is None:
        background_outputs_mean = weights @ fns.predict(background, chunk_size).astype(np.float64)  # (C,)
    rows = np.arange(len(targets))
    scores = outputs[rows, targets].astype(np.float64)  # (B,) f(x)
    empty = np.asarray(background_outputs_mean, dtype=np.float64)[targets]  # (B,) v(empty)
    output_change = scores - empty

    phi = np.zeros((len(targets), num_players))  # (B, P)
    stderr = np.zeros(len(targets))
    per_row = min(budget, 2**num_players - 2) if num_players <= 30 else budget
    rows_per_block = max(1, DESIGN_BUDGET // max(1, per_row * num_players))
    for start in range(0, len(targets), rows_per_block):
        block = slice(start, min(start + rows_per_block, len(targets)))
        _explain_block(fns, inputs, background, weights, players, num_players, targets, example_seeds, budget, seed,
                       chunk_size, block, empty, output_change, phi, stderr)

    attributions = spread(phi, players)
    delta = attribution_sums(attributions) - output_change
    return Attributions(
        attributions=attributions,
        convergence_delta=delta.astype(np.float32),
        output_change=output_change.astype(np.float32),
        stderr=stderr.astype(np.float32),
        targets=targets,
        target_scores=scores.astype(np.float32),
        completeness_error=completeness_error(delta, output_change, mass(attributions)),
    )


def _explain_block(fns, inputs, background, weights, players, num_players, targets, example_seeds, budget, seed,
                   chunk_size, block: slice, empty, output_change, phi, stderr) -> None:
    """Fills phi[block] (P per row) and stderr[block]."""
    varying = _varying(inputs, background, players, num_players, block)  # (b, P)
    designs: dict[int, tuple[_Design, np.ndarray]] = {}
    for b in range(block.start, block.stop):
        active = np.flatnonzero(varying[b - block.start])  # (M,)
        if len(active) == 1:
            phi[b, active[0]] = output_change[b]
        elif len(active) >= 2:
            designs[b] = (_design(example_rng(seed, example_seeds[b]), len(active), budget), active)
    if not designs:
        return
    owners, coalitions = [], []
    for b, (design, active) in designs.items():
        full = np.zeros((len(design.masks), num_players), bool)  # dummies take the reference: no matter
        full[:, active] = design.masks
        coalitions.append(full)
        owners.append(np.full(len(full), b))
    owners_arr = np.concatenate(owners)
    values = _coalition_values(fns, inputs, background, weights, players, owners_arr, np.concatenate(coalitions),
                               targets, chunk_size)  # (K,)
    offset = 0
    for b, (design, active) in designs.items():
        n = len(design.masks)
        values_b, offset = values[offset:offset + n], offset + n
        phi[b, active], stderr[b] = _row_values(design, values_b, empty[b], output_change[b])


def background_summary(rows: Sequence[np.ndarray], k: int, seed: int = 0, restarts: int = 10,
                       max_iterations: int = 300) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """A k-means summary of a background sample, as shap.kmeans makes one.

    rows: one array per model input, (N, *shape_i); the N rows are clustered on all their elements
    together (flattened and concatenated). Lloyd's algorithm from k-means++ seeds (Arthur &
    Vassilvitskii 2007), `restarts` times, the lowest within-cluster sum of squares kept (shap
    calls scikit-learn's KMeans with n_init=10); deterministic by `seed`. Like shap
    (round_values=True), each center element is then snapped to the nearest value that element
    takes in the data, so a discrete column keeps valid values; the weights are the cluster sizes
    / N (clusters before snapping). Returns ((k, *shape_i) float32 per input, float64 (k,) weights
    summing to 1), to pass as kernel_shap's background and background_weights. A cluster left
    empty (fewer than k distinct rows) has weight 0.
    """
    rows = tuple(np.asarray(r) for r in rows)
    if not rows or len(rows[0]) == 0:
        raise ValueError("background_summary: no rows to summarize; give (N, *shape) arrays with N >= 1.")
    count = len(rows[0])
    if any(len(r) != count for r in rows):
        raise ValueError(f"background_summary: inputs have {[len(r) for r in rows]} rows; they must all have the same N.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= count:
        raise ValueError(f"background_summary: k must be an integer from 1 to the {count} rows given; got {k!r}.")
    data = np.concatenate([r.reshape(count, -1).astype(np.float64) for r in rows], axis=1)  # (N, D)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, int(restarts))):
        centers, labels, inertia = _lloyd(data, _kmeans_plus_plus(data, k, rng), max_iterations)
        if best is None or inertia < best[2]:
            best = (centers, labels, inertia)
    centers, labels, _ = best
    weights = np.bincount(labels, minlength=k) / count  # (k,)
    snapped = np.empty_like(centers)
    for j in range(data.shape[1]):
        nearest = np.abs(data[:, j][None, :] - centers[:, j][:, None]).argmin(axis=1)  # (k,)
        snapped[:, j] = data[nearest, j]
    out, start = [], 0
    for r in rows:
        size = int(np.prod(r.shape[1:], dtype=np.int64))
        out.append(snapped[:, start:start + size].reshape(k, *r.shape[1:]).astype(np.float32))
        start += size
    return tuple(out), weights


def _squared_distances(data: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(N, k) squared Euclidean distances, float64, clipped at 0."""
    d = (data * data).sum(axis=1)[:, None] - 2 * data @ centers.T + (centers * centers).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_plus_plus(data: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, D) seeds: the first uniform, each next with probability proportional to D(x)^2."""
    centers = [data[rng.integers(len(data))]]
    closest = _squared_distances(data, np.array(centers))[:, 0]  # (N,)
    for _ in range(1, k):
        total = closest.sum()
        pick = rng.integers(len(data)) if total <= 0 else rng.choice(len(data), p=closest / total)
        centers.append(data[pick])
        closest = np.minimum(closest, _squared_distances(data, data[pick][None])[:, 0])
    return np.array(centers)


def _lloyd(data: np.ndarray, centers: np.ndarray, max_iterations: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's iterations until the labels stop changing: (centers (k, D), labels (N,), inertia)."""
    labels = None
    for _ in range(max_iterations):
        distances = _squared_distances(data, centers)  # (N, k)
        new_labels = distances.argmin(axis=1)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for c in range(len(centers)):
            members = labels == c
            if members.any():  # an empty cluster keeps its center
                centers[c] = data[members].mean(axis=0)
    distances = _squared_distances(data, centers)
    labels = distances.argmin(axis=1)
    return centers, labels, float(distances[np.arange(len(data)), labels].sum())
