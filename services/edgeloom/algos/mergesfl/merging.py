"""Feature merging and gradient dispatch: the server side of one MergeSFL iteration."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def merge_features(
    features: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    """Concatenate the workers' feature batches into one mixed batch.

    Parameters
    ----------
    features : sequence of torch.Tensor
        One floating ``(b_i, *feature_shape)`` tensor per worker, same feature shape, dtype
        and device.
    labels : sequence of torch.Tensor
        One ``(b_i,)`` label tensor per worker.

    Returns
    -------
    merged_features : torch.Tensor
        ``(sum b_i, *feature_shape)``, a new leaf tensor with ``requires_grad=True``: run the
        top model on it, call ``backward`` on the loss, then pass ``merged_features.grad`` to
        :func:`split_gradients`.
    merged_labels : torch.Tensor
        ``(sum b_i,)``, in the same order.
    slices : list of slice
        Rows of worker ``i`` in the merged batch.

    Raises
    ------
    ValueError
        On no workers, an empty batch, mismatched shapes or non-floating features.
    """
    if not features or len(features) != len(labels):
        raise ValueError(
            f"need one label tensor per feature tensor, got {len(features)} and {len(labels)}"
        )
    shape = features[0].shape[1:]
    slices = []
    offset = 0
    for i, (f, y) in enumerate(zip(features, labels, strict=True)):
        if not f.is_floating_point() or f.ndim < 1 or f.shape[1:] != shape or len(f) == 0:
            raise ValueError(
                f"worker {i}: features must be a non-empty floating batch of shape "
                f"(b, {', '.join(map(str, shape))}), got {f.dtype} {tuple(f.shape)}"
            )
        if y.shape != (len(f),):
            raise ValueError(f"worker {i}: expected {len(f)} labels, got shape {tuple(y.shape)}")
        slices.append(slice(offset, offset + len(f)))
        offset += len(f)
    merged = torch.cat([f.detach() for f in features]).requires_grad_(True)
    return merged, torch.cat(list(labels)), slices


def split_gradients(
    grad_merged: torch.Tensor, slices: Sequence[slice], batch_sizes: Sequence[int]
) -> list[torch.Tensor]:
    """Cut the merged-batch feature gradient into per-worker gradients, rescaled by Σb / b_i.

    With the mean loss over the merged batch, ``L = (1/Σb) Σ_n l_n``, the gradient row of
    sample ``n`` of worker ``i`` is ``(1/Σb) ∂l_n/∂f_n``; times ``Σb / b_i`` it becomes
    ``(1/b_i) ∂l_n/∂f_n``. Backpropagated through worker ``i``'s bottom model, this gives

    * exactly the gradient of worker ``i``'s own mean loss ``L_i = (1/b_i) Σ_{n∈i} l_n``
      whenever the top model treats samples independently (no train-mode BatchNorm or other
      cross-sample layer);
    * in every case, bottom gradients whose ``b_i / Σb``-weighted average is the gradient of
      ``L`` for the whole model, so averaging bottom models with weights ``b_i`` after one SGD
      step equals one centralised SGD step on the merged batch.

    Parameters
    ----------
    grad_merged : torch.Tensor
        ``∂L/∂merged_features`` for the mean-reduced loss over the merged batch.
    slices : sequence of slice
        From :func:`merge_features`.
    batch_sizes : sequence of int
        ``b_i``, which must match the slices.

    Returns
    -------
    list of torch.Tensor
        Worker ``i``'s gradient, shape ``(b_i, *feature_shape)``, on ``grad_merged``'s device.
    """
    lengths = [s.stop - s.start for s in slices]
    if lengths != list(batch_sizes) or sum(lengths) != len(grad_merged):
        raise ValueError(
            f"slices {lengths} must match batch sizes {list(batch_sizes)} and the "
            f"{len(grad_merged)} gradient rows"
        )
    total = sum(lengths)
    return [grad_merged[s].detach() * (total / b) for s, b in zip(slices, lengths, strict=True)]
