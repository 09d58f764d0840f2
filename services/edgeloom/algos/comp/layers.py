"""Coarse stage: layer importance from how much each block changes its input."""

from __future__ import annotations

from edgeloom.algos.comp.calibration import Calibration, LayerStream, mean_token_cosine
from edgeloom.models.llm import TransformerView


def block_influence(view: TransformerView, calibration: Calibration) -> list[float]:
    """Block Influence of every layer: ``1 - cos(x_in, x_out)`` averaged over real tokens.

    A block whose output is nearly its input (BI close to 0) does little and is the first to
    go (ShortGPT's metric, which COMP's coarse stage uses). Blocks run one at a time.
    """
    stream = LayerStream(view, calibration)
    scores = []
    for layer in view.layers:
        outputs = stream.run(layer)
        scores.append(1.0 - mean_token_cosine(stream.tokens(stream.hidden), stream.tokens(outputs)))
        stream.advance(outputs)
    return scores
