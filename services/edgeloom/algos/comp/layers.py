"""Coarse stage: layer importance from how much each block changes its input."""

from __future__ import annotations

import torch

from edgeloom.algos.comp.calibration import Calibration, LayerStream, token_cosines
from edgeloom.models.llm import TransformerView


def block_influence(view: TransformerView, calibration: Calibration) -> list[float]:
    """Block Influence of every layer: ``1 - cos(x_in, x_out)`` averaged over real tokens.

    A block whose output is nearly its input (BI close to 0) does little and is the first to
    go (ShortGPT's metric, which COMP's coarse stage uses). Blocks run one at a time.
    """
    stream = LayerStream(view, calibration)
    scores = []
    for layer in view.layers:
        total, count = 0.0, 0

        def accumulate(hidden: torch.Tensor, output: torch.Tensor, mask: torch.Tensor) -> None:
            nonlocal total, count
            cosines = token_cosines(hidden[mask], output[mask])
            total += float(cosines.sum())
            count += cosines.numel()

        stream.step(layer, accumulate)
        scores.append(1.0 - total / count)
    return scores
