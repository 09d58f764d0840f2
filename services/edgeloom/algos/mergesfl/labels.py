"""Label distributions: normalising them, the merged batch's mix and its divergence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgeloom.algos.mergesfl.regulation import FloatArray


def kl_divergence(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """``KL(p ‖ q) = Σ_c p_c log(p_c / q_c)`` in nats, with ``0 log 0 = 0``.

    Both arguments are normalised first, so counts work as well as probabilities. The result is
    ``inf`` when ``q`` is zero where ``p`` is not.
    """
    p_arr, q_arr = normalise(p, "p"), normalise(q, "q")
    if p_arr.shape != q_arr.shape:
        raise ValueError(f"p and q differ in shape: {p_arr.shape} and {q_arr.shape}")
    support = p_arr > 0
    if np.any(q_arr[support] == 0):
        return math.inf
    return float(np.sum(p_arr[support] * np.log(p_arr[support] / q_arr[support])))


def merged_label_distribution(batch_sizes: Sequence[int], label_dists: npt.ArrayLike) -> FloatArray:
    """``P_m(c) = Σ_i b_i P_i(c) / Σ_i b_i``, the label distribution of the merged batch.

    Parameters
    ----------
    batch_sizes : sequence of int
        ``b_i`` of the selected workers.
    label_dists : array_like
        ``(len(batch_sizes), C)``; each row is normalised first (label counts work too).

    Returns
    -------
    np.ndarray
        float64 probabilities of shape ``(C,)``.
    """
    rows = normalise_rows(label_dists)
    weights = np.asarray(batch_sizes, dtype=np.float64)
    if weights.shape != (len(rows),) or weights.min() < 0 or weights.sum() <= 0:
        raise ValueError("need one non-negative batch size per row, not all zero")
    merged: FloatArray = weights @ rows / weights.sum()
    return merged


def normalise_rows(matrix: npt.ArrayLike) -> FloatArray:
    rows = np.asarray(matrix, dtype=np.float64)
    if rows.ndim != 2 or not np.all(np.isfinite(rows)) or rows.min() < 0:
        raise ValueError("label distributions must be an (N, C) array of non-negative values")
    sums = rows.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError("every label distribution needs a positive total")
    normalised: FloatArray = rows / sums
    return normalised


def normalise(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.sum() <= 0:
        raise ValueError(f"{name} must be a 1-D array of non-negative finite values, not all 0")
    normalised: FloatArray = arr / arr.sum()
    return normalised
