"""MergeSFL's bottom-model aggregation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from edgeloom.algos.common import weighted_average


def aggregate_bottom_models(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], batch_sizes: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Bottom models averaged by batch size, ``Σ_i b_i θ_i / Σ_i b_i``: each worker took ``τ``
    steps on ``b_i`` samples (the group's AdaSFL weighting; see the package docstring).

    Raises
    ------
    ValueError
        As :func:`edgeloom.algos.common.weighted_average`.
    """
    return weighted_average(state_dicts, batch_sizes)
