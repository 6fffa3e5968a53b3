"""Sampled Shapley values by permutation sampling (Castro, Gomez & Tejada 2009, "Polynomial
calculation of the Shapley value based on sampling"; Vertex AI Explainable AI's "sampled Shapley",
whose `path_count` is our `samples`, the number of permutations).

The players (attributions.players) are P sets of input elements; a coalition S takes the row's
values on its players and the baseline's elsewhere, v(S) = F_target(blend(x, b, S)). The Shapley
value of player p is the average of its marginal contribution over the P! orders of the players:

    phi_p = E_pi [ v(pre_pi(p) + {p}) - v(pre_pi(p)) ],   pre_pi(p): the players before p in pi

estimated with N random permutations per row. Each permutation is a walk from the baseline to x
adding one player at a time: P + 1 points v(empty) = F(b), v(first), ..., v(all) = F(x), and each
player's marginal is the step it adds. v(empty) and v(all) are shared by every permutation, so a
row costs N (P - 1) + 2 model evaluations.

Efficiency holds exactly for every row and every N: one permutation's marginals telescope to
F(x) - F(b), so their mean does too; the convergence delta is float rounding only.

Antithetic permutations (Mitchell, Cooper, Frank & Holmes 2022, "Sampling permutations for Shapley
value estimation", JMLR 23): each drawn permutation is also used reversed. The pair's marginals of
a player are negatively correlated (late in one, early in the other), which lowers the variance,
and for a game with only pairwise interactions a pair's average is the exact Shapley value.
ceil(N / 2) permutations are drawn, so an odd N is rounded up to the next even number.

Standard error: each player's Monte-Carlo standard error is std / sqrt(n) over the n independent
draws: the N permutations, or with antithetic sampling the N / 2 pair averages (ddof = 1). A row
reports the largest over its players. The standard error of sum(attributions) is 0 (efficiency),
so `delta_stderr` is not set.

Permutations come from a generator seeded by (seed, example seed): batch invariant and
reproducible. All points of all rows are evaluated in blocks of at most `chunk_size` points
(`attributions.coalition_scores`), one predict call each.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attributions.coalition_scores import check_inputs, check_players, coalition_points, target_scores_at_points
from attributions.model_functions import ModelFunctions
from attributions.players import spread
from attributions.result import Attributions, attribution_mass, attribution_sums, completeness_error
from attributions.sampling import example_rng

__all__ = ["sampled_shapley", "shapley_values", "permutation_count", "DEFAULT_SAMPLES"]

DEFAULT_SAMPLES = 25
# Marginal contributions held at once while averaging (float64, 8 bytes each; 32 MiB).
MARGINALS_PER_BLOCK = 1 << 22


def permutation_count(samples: int, antithetic: bool = True) -> int:
    """Permutations a row uses for `samples`: samples, or with antithetic pairs the next even
    number (ceil(samples / 2) pairs). Raises ValueError where no standard error can be estimated."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ValueError(
            f"sampled Shapley needs samples >= 2 permutations per row to estimate its standard error; "
            f"got {samples!r}."
        )
    if antithetic and samples < 3:
        raise ValueError(
            f"sampled Shapley with antithetic permutations needs samples >= 3 (two permutation pairs) to "
            f"estimate its standard error; got {samples}: raise samples or pass antithetic=False."
        )
    return 2 * -(-int(samples) // 2) if antithetic else int(samples)


def shapley_values(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    targets: np.ndarray,
    players: Sequence[np.ndarray],
    example_seeds: np.ndarray,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    chunk_size: int = 1024,
    antithetic: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-player sampled Shapley values of B rows (arguments as `sampled_shapley`).

    Returns (values float64 (B, P), stderr float64 (B, P) per player, F(x) float32 (B,),
    F(baseline) float32 (B,)), the last two the target scores.
    """
    inputs, baselines, targets = check_inputs(fns, inputs, baselines, targets, "sampled Shapley")
    players, count = check_players(players, inputs, "sampled Shapley")
    permutations = permutation_count(samples, antithetic)
    example_seeds = np.asarray(example_seeds)
    if example_seeds.shape != targets.shape:
        raise ValueError(
            f"sampled Shapley: example_seeds must be (B,) = {targets.shape}, one per row; got {example_seeds.shape}."
        )
    ranks = np.stack([
        _permutation_ranks(example_rng(seed, s), count, permutations, antithetic) for s in example_seeds
    ])  # (B, N, P)
    points_per_row = permutations * (count - 1) + 2
    build = coalition_points(inputs, baselines, players, lambda rows, ms: _walk_coalitions(ranks, rows, ms))
    scores = target_scores_at_points(fns, targets, points_per_row, build, chunk_size)  # (B, M)
    values, stderr = np.empty((len(targets), count)), np.empty((len(targets), count))  # (B, P) each
    # The float64 marginals (rows, N, P) are formed a few rows at a time: B x N x P of them would
    # be 8 x the scores' own memory.
    step = max(1, MARGINALS_PER_BLOCK // (permutations * count))
    for start in range(0, len(targets), step):
        rows = slice(start, start + step)
        marginals = _marginals(scores[rows], ranks[rows])  # (rows, N, P)
        values[rows] = marginals.mean(axis=1)
        stderr[rows] = _player_stderr(marginals, antithetic)
    return values, stderr, scores[:, 1], scores[:, 0]


def sampled_shapley(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    targets: np.ndarray,
    players: Sequence[np.ndarray],
    example_seeds: np.ndarray,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    chunk_size: int = 1024,
    antithetic: bool = True,
) -> Attributions:
    """Sampled Shapley attributions of B rows (module docstring).

    Args:
      inputs: one float32 array per model input, (B, *shape_i).
      baselines: one array per model input, (B, *shape_i), (1, *shape_i) or (*shape_i) (one for all).
      targets: int32 (B,), the output index explained (>= 0).
      players: one int32 array per input, (*shape_i), players 0..P-1 (attributions.players).
      example_seeds: uint64 (B,), one per row (e.g. a hash of its key).
      samples: permutations per row (>= 2; >= 3 with antithetic, rounded up to even).
      antithetic: use each drawn permutation and its reverse.
      chunk_size: most points per predict call; a row costs samples x (P - 1) + 2 points.
    Returns: attributions (B, *shape_i) per input (each player's value spread evenly over its
      elements), convergence_delta, output_change = F(x) - F(b), stderr (the largest per-player
      standard error), completeness_error, targets and target_scores = F(x), each (B,).
    """
    values, player_stderr, f_x, f_b = shapley_values(
        fns, inputs, baselines, targets, players, example_seeds, samples, seed, chunk_size, antithetic
    )
    attributions = spread(values, players)
    output_change = f_x.astype(np.float64) - f_b.astype(np.float64)  # (B,)
    delta = attribution_sums(attributions) - output_change  # (B,)
    stderr = player_stderr.max(axis=1)  # (B,)
    return Attributions(
        attributions=attributions,
        convergence_delta=delta.astype(np.float32),
        output_change=output_change.astype(np.float32),
        stderr=stderr.astype(np.float32),
        targets=np.asarray(targets, dtype=np.int32),
        target_scores=f_x,
        completeness_error=completeness_error(delta, output_change, attribution_mass(attributions)),
    )


def _permutation_ranks(rng: np.random.Generator, count: int, permutations: int, antithetic: bool) -> np.ndarray:
    """int32 (N, P): rank[s, p] = the position of player p in permutation s. With antithetic
    sampling, permutation s + N/2 is permutation s reversed."""
    drawn = permutations // 2 if antithetic else permutations
    orders = rng.permuted(np.tile(np.arange(count, dtype=np.int32), (drawn, 1)), axis=1)  # (n, P)
    if antithetic:
        orders = np.concatenate([orders, orders[:, ::-1]])  # (N, P)
    return np.argsort(orders, axis=1).astype(np.int32)


def _walk_coalitions(ranks: np.ndarray, rows: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """bool (n, P): point m of a row's walks. m = 0: the baseline (no player); m = 1: x (every
    player); m = 2 + s (P - 1) + (k - 1): the first k players of permutation s, k = 1..P-1."""
    count = ranks.shape[2]
    coalitions = np.repeat((ms == 1)[:, None], count, axis=1)  # (n, P)
    inner = ms >= 2
    if count > 1 and inner.any():
        permutation, k = np.divmod(ms[inner] - 2, count - 1)  # (i,) each
        coalitions[inner] = ranks[rows[inner], permutation] < (k + 1)[:, None]
    return coalitions


def _marginals(scores: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """float64 (B, N, P): each player's marginal contribution in each permutation, from the target
    scores (B, M) laid out as `_walk_coalitions`."""
    rows, permutations, count = ranks.shape
    scores = scores.astype(np.float64)
    walk = np.empty((rows, permutations, count + 1))  # (B, N, P + 1): F(b), the prefixes, F(x)
    walk[:, :, 0] = scores[:, None, 0]
    walk[:, :, count] = scores[:, None, 1]
    walk[:, :, 1:count] = scores[:, 2:].reshape(rows, permutations, count - 1)
    steps = np.diff(walk, axis=2)  # (B, N, P): step j adds the player at position j
    return np.take_along_axis(steps, ranks.astype(np.int64), axis=2)  # (B, N, P) by player


def _player_stderr(marginals: np.ndarray, antithetic: bool) -> np.ndarray:
    """float64 (B, P): std / sqrt(n) over the independent draws (pair averages when antithetic)."""
    if antithetic:
        half = marginals.shape[1] // 2
        marginals = (marginals[:, :half] + marginals[:, half:]) / 2  # (B, N/2, P)
    draws = marginals.shape[1]
    return marginals.std(axis=1, ddof=1) / np.sqrt(draws)
