"""Batch-size regulation: size each worker's batch so that iterations finish together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def per_sample_times(
    per_sample_compute_s: npt.ArrayLike, per_sample_transfer_s: npt.ArrayLike
) -> FloatArray:
    """Validated per-sample iteration cost ``μ_i + 2s/β_i`` of each worker, in seconds.

    Raises
    ------
    ValueError
        On different lengths, no worker, negative or non-finite times, or a zero total.
    """
    compute = np.asarray(per_sample_compute_s, dtype=np.float64)
    transfer = np.asarray(per_sample_transfer_s, dtype=np.float64)
    if compute.ndim != 1 or compute.shape != transfer.shape or len(compute) == 0:
        raise ValueError("need equally long, non-empty 1-D compute and transfer times")
    total = compute + transfer
    if not (np.all(np.isfinite(total)) and compute.min() >= 0 and transfer.min() >= 0):
        raise ValueError("per-sample times must be finite and non-negative")
    if total.min() <= 0:
        raise ValueError("every worker needs a positive per-sample time")
    return total


def predicted_iteration_times(
    batch_sizes: Sequence[int],
    per_sample_compute_s: npt.ArrayLike,
    per_sample_transfer_s: npt.ArrayLike,
) -> FloatArray:
    """Per-worker iteration time ``t_i = b_i (μ_i + 2s/β_i)`` in seconds."""
    times: FloatArray = np.asarray(batch_sizes, dtype=np.float64) * per_sample_times(
        per_sample_compute_s, per_sample_transfer_s
    )
    return times


def regulate_batch_sizes(
    per_sample_compute_s: npt.ArrayLike,
    per_sample_transfer_s: npt.ArrayLike,
    total_batch: int,
    min_batch: int,
    max_batch: int,
) -> list[int]:
    """Batch sizes proportional to worker speed, ``b_i = B v_i / Σ v_j``.

    ``v_i = 1 / (μ_i + 2s/β_i)`` so that every ``t_i = b_i / v_i`` is the same. Sizes are
    clipped to ``[min_batch, max_batch]`` by water-filling (clipped workers keep their bound, the
    others share the rest in proportion to ``v_i``), then rounded by largest remainder (ties to
    the lower index), so they are integers within the bounds that sum to ``B`` whenever
    ``n·min_batch <= B <= n·max_batch``; otherwise every worker gets the violated bound. After
    rounding, iteration times differ by at most one sample's time.

    Parameters
    ----------
    per_sample_compute_s : array_like of float
        ``μ_i``: forward + backward seconds per sample on worker ``i``.
    per_sample_transfer_s : array_like of float
        ``2s/β_i``: seconds to send one sample's features up and its gradient down (the caller
        computes it from the feature size and the link bandwidths).
    total_batch : int
        ``B``, the merged batch size.
    min_batch, max_batch : int
        Bounds of a single batch, ``1 <= min_batch <= max_batch``.

    Returns
    -------
    list of int
        ``b_i`` in the workers' order.
    """
    if total_batch < 1 or not 1 <= min_batch <= max_batch:
        raise ValueError(
            f"need total_batch >= 1 and 1 <= min_batch <= max_batch, got {total_batch}, "
            f"{min_batch}, {max_batch}"
        )
    speed = 1.0 / per_sample_times(per_sample_compute_s, per_sample_transfer_s)
    n = len(speed)
    if n * min_batch >= total_batch:
        return [min_batch] * n
    if n * max_batch <= total_batch:
        return [max_batch] * n
    ideal = _water_fill(speed, total_batch, min_batch, max_batch)
    return _round_largest_remainder(ideal, total_batch, max_batch)


def _water_fill(speed: FloatArray, total: int, low: int, high: int) -> FloatArray:
    """Real sizes ``clip(λ v_i, low, high)`` with ``λ`` chosen so that they sum to ``total``.

    The sum is piecewise linear in ``λ`` with kinks at ``low/v_i`` and ``high/v_i``; linear
    interpolation between the two kinks around ``total`` gives ``λ`` exactly.
    """
    kinks = np.unique(np.concatenate([low / speed, high / speed]))
    sums = np.clip(np.outer(kinks, speed), low, high).sum(axis=1)
    j = int(np.searchsorted(sums, total))
    lam = kinks[j - 1] + (total - sums[j - 1]) * (kinks[j] - kinks[j - 1]) / (sums[j] - sums[j - 1])
    sizes: FloatArray = np.clip(lam * speed, low, high)
    return sizes


def _round_largest_remainder(ideal: FloatArray, total: int, high: int) -> list[int]:
    sizes = np.floor(ideal + 1e-9)
    remainder = round(total - float(sizes.sum()))
    order = np.argsort(-(ideal - sizes), kind="stable")
    sizes[order[sizes[order] < high][:remainder]] += 1
    return [int(b) for b in sizes]
