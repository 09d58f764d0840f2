"""Weighted averaging of model state dicts, shared by every federated method
(MergeSFL's bottom models, SplitFed, FedAvg; FedSpine's LoRA aggregation will sit beside it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def weighted_average(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts, ``Σ_i w_i θ_i / Σ_i w_i``.

    Floating tensors are accumulated in at least float32 and cast back to their own dtype.
    Integer and boolean tensors (such as BatchNorm's ``num_batches_tracked``, equal on all
    workers after the same number of steps) cannot be averaged and are copied from the first
    state dict. Results are new tensors on the first state dict's devices.

    Parameters
    ----------
    state_dicts : sequence of mapping
        Same keys, shapes and dtypes in each.
    weights : sequence of float
        Non-negative, finite, not all zero; one per state dict.

    Returns
    -------
    dict of str to torch.Tensor
        Ready for ``load_state_dict``.

    Raises
    ------
    ValueError
        On no state dicts, bad weights, or mismatched keys, shapes or dtypes.
    """
    if not state_dicts or len(state_dicts) != len(weights):
        raise ValueError(
            f"need one weight per state dict, got {len(state_dicts)} and {len(weights)}"
        )
    if any(not 0 <= w < float("inf") for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero: {list(weights)}")
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], start=1):
        if sd.keys() != first.keys():
            raise ValueError(f"state dict {i} has different keys from state dict 0")
        for key, tensor in sd.items():
            if tensor.shape != first[key].shape or tensor.dtype != first[key].dtype:
                raise ValueError(
                    f"state dict {i}, {key}: {tensor.dtype} {tuple(tensor.shape)} differs from "
                    f"{first[key].dtype} {tuple(first[key].shape)}"
                )
    total = float(sum(weights))
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, reference in first.items():
            if not reference.is_floating_point():
                merged[key] = reference.clone()
                continue
            dtype = torch.promote_types(reference.dtype, torch.float32)
            acc = torch.zeros_like(reference, dtype=dtype)
            for sd, weight in zip(state_dicts, weights, strict=True):
                acc.add_(sd[key].to(acc.device), alpha=float(weight) / total)
            merged[key] = acc.to(reference.dtype)
    return merged


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
    sample_counts: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """FedAvg-style average of state dicts, weighted by sample counts (equal when ``None``).

    See :func:`weighted_average` for the handling of dtypes, integer buffers and devices.
    """
    weights = [1.0] * len(state_dicts) if sample_counts is None else sample_counts
    return weighted_average(state_dicts, weights)
