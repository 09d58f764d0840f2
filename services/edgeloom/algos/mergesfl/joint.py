"""Joint batch sizing: the batch sizes of a selected set that bring its merged label mix closest
to the target within the regulated iteration time (a documented reconstruction, see below).

The paper says MergeSFL "jointly optimize[s]" batch regulation and worker selection "upon their
coupled relationship" but gives no algorithm, and the official code's control step is a stub.
This module is the reconstruction: for the selected workers, with label distributions ``P_i``
and per-sample times ``c_i = μ_i + 2s/β_i``, choose integer batch sizes ``b_i`` that minimise

    KL(P_m ‖ U),   P_m = Σ_i b_i P_i / B,

subject to ``Σ_i b_i = B``, ``min_batch <= b_i <= max_batch`` and ``b_i c_i <= T`` for every
worker, where ``T`` is ``(1 + joint_slack)`` times the iteration time batch regulation alone
gives the same set (:func:`~edgeloom.algos.mergesfl.regulation.regulate_batch_sizes`). ``P_m`` is
linear in ``b`` and KL is convex in its first argument, so the relaxed problem is convex: SLSQP
(scipy) solves it from the regulated sizes, largest-remainder rounding makes the sizes integers
within each worker's bound, and single-sample moves between workers polish the integer point
while they lower the divergence. The regulated sizes are feasible, so the result is never worse
in KL than regulation alone and never slower than ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from edgeloom.algos.mergesfl.labels import kl_divergence, normalise, normalise_rows
from edgeloom.algos.mergesfl.regulation import (
    FloatArray,
    per_sample_times,
    regulate_batch_sizes,
)

_EPS = 1e-12


@dataclass(frozen=True)
class JointBatches:
    """Batch sizes of a selected set from :func:`joint_batch_sizes`.

    Attributes
    ----------
    batch_sizes : tuple of int
        ``b_i`` in the workers' order; they sum to ``B`` within every bound.
    divergence : float
        ``KL(P_m ‖ target)`` of those sizes.
    time_bound_s : float
        ``T``: no worker's predicted iteration time exceeds it.
    """

    batch_sizes: tuple[int, ...]
    divergence: float
    time_bound_s: float


def joint_batch_sizes(
    label_dists: npt.ArrayLike,
    per_sample_compute_s: npt.ArrayLike,
    per_sample_transfer_s: npt.ArrayLike,
    target: npt.ArrayLike,
    total_batch: int,
    min_batch: int,
    max_batch: int,
    slack: float = 0.0,
) -> JointBatches:
    """The batch sizes that minimise ``KL(P_m ‖ target)`` within the regulated time bound.

    Parameters
    ----------
    label_dists : array_like
        ``(K, C)`` label distribution (or counts) of each selected worker.
    per_sample_compute_s, per_sample_transfer_s : array_like of float
        ``μ_i`` and ``2s/β_i`` of each selected worker, as for ``regulate_batch_sizes``.
    target : array_like
        ``(C,)`` target distribution ``U`` (counts work too).
    total_batch, min_batch, max_batch : int
        ``B`` and the bounds of one batch.
    slack : float
        ``T = (1 + slack)`` times the regulated iteration time; 0 allows no worker to take
        longer than regulation's slowest.

    Returns
    -------
    JointBatches

    Raises
    ------
    ValueError
        On inconsistent shapes, negative ``slack`` or the errors of ``regulate_batch_sizes``.
    """
    if not slack >= 0 or math.isinf(slack):
        raise ValueError(f"slack must be finite and non-negative, got {slack}")
    rows = normalise_rows(label_dists)
    goal = normalise(target, "target")
    if np.any(goal == 0):
        raise ValueError("target must be positive for every class (KL to it is then finite)")
    per_sample = per_sample_times(per_sample_compute_s, per_sample_transfer_s)
    if rows.shape != (len(per_sample), len(goal)):
        raise ValueError(
            f"need one label distribution of {len(goal)} classes per worker, got {rows.shape}"
        )
    regulated = np.asarray(
        regulate_batch_sizes(
            per_sample_compute_s, per_sample_transfer_s, total_batch, min_batch, max_batch
        ),
        dtype=np.float64,
    )
    bound_s = (1 + slack) * float((regulated * per_sample).max())
    # a worker's cap: the batch bound or what fits in T, never below what regulation gave it
    cap = np.maximum(np.minimum(max_batch, np.floor(bound_s / per_sample + 1e-9)), regulated)
    low = np.minimum(float(min_batch), regulated)
    best = regulated
    if low.sum() < total_batch < cap.sum():  # otherwise regulation's sizes are the only choice
        relaxed = _solve_relaxed(rows, goal, regulated, low, cap, total_batch)
        rounded = _polish(rows, goal, _round(relaxed, low, cap, total_batch), low, cap)
        if kl_divergence(rounded @ rows, goal) < kl_divergence(regulated @ rows, goal):
            best = rounded
    sizes = tuple(int(b) for b in best)
    return JointBatches(sizes, kl_divergence(best @ rows, goal), bound_s)


def _solve_relaxed(
    rows: FloatArray,
    goal: FloatArray,
    start: FloatArray,
    low: FloatArray,
    cap: FloatArray,
    total: int,
) -> FloatArray:
    """SLSQP on the convex relaxation, started at the (feasible) regulated sizes."""

    def objective(b: FloatArray) -> tuple[float, FloatArray]:
        merged = np.maximum(b @ rows / total, _EPS)
        log_ratio = np.log(merged / goal)
        grad: FloatArray = rows @ (log_ratio + 1.0) / total
        return float(merged @ log_ratio), grad

    result = minimize(
        objective,
        start,
        jac=True,
        method="SLSQP",
        bounds=list(zip(low, cap, strict=True)),
        constraints=[{"type": "eq", "fun": lambda b: b.sum() - total, "jac": np.ones_like}],
        options={"maxiter": 200, "ftol": 1e-12},
    )
    relaxed: FloatArray = np.clip(result.x, low, cap)
    return relaxed


def _round(relaxed: FloatArray, low: FloatArray, cap: FloatArray, total: int) -> FloatArray:
    """Largest-remainder rounding within each worker's ``[low, cap]`` to a sum of ``total``."""
    sizes = np.clip(np.floor(relaxed + 1e-9), low, cap)
    order = np.argsort(-(relaxed - sizes), kind="stable")
    while (missing := total - int(sizes.sum())) > 0:
        room = [i for i in order if sizes[i] < cap[i]][:missing]
        sizes[room] += 1
    while (surplus := int(sizes.sum()) - total) > 0:
        spare = [i for i in order[::-1] if sizes[i] > low[i]][:surplus]
        sizes[spare] -= 1
    return sizes


def _polish(
    rows: FloatArray, goal: FloatArray, sizes: FloatArray, low: FloatArray, cap: FloatArray
) -> FloatArray:
    """Move one sample at a time from one worker to another while that lowers the KL."""
    current = kl_divergence(sizes @ rows, goal)
    for _ in range(int(sizes.sum())):  # each move lowers the KL strictly; this only bounds the loop
        givers = np.flatnonzero(sizes > low)
        takers = np.flatnonzero(sizes < cap)
        best_move, best_kl = None, current
        for i in givers:
            for j in takers:
                if i != j:
                    kl = kl_divergence(sizes @ rows + rows[j] - rows[i], goal)
                    if kl < best_kl - 1e-12:
                        best_move, best_kl = (i, j), kl
        if best_move is None:
            break
        sizes[best_move[0]] -= 1
        sizes[best_move[1]] += 1
        current = best_kl
    return sizes
