"""Calibration batches and a layer-at-a-time pass over them.

Every post-training method here looks at the model through the same lens: the hidden states
that enter each block on a few calibration batches. `LayerStream` keeps one hidden-state tensor
per batch and advances them one block at a time, so no method ever needs the activations of
more than one block at once. `capture_inputs` records what a projection receives (the MLP's
hidden neurons, the attention heads' outputs) while a block runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from edgeloom.models.llm import LayerContext, TransformerView


@dataclass
class Calibration:
    """Tokenised calibration batches; ``attention_mask`` marks real (non-padding) tokens."""

    batches: list[dict[str, torch.Tensor]]

    def token_masks(self) -> list[torch.Tensor]:
        """One boolean mask per batch, shape ``(batch, seq)``."""
        return [
            b["attention_mask"].bool()
            if "attention_mask" in b
            else torch.ones_like(b["input_ids"], dtype=torch.bool)
            for b in self.batches
        ]


class LayerStream:
    """The hidden states entering the current block, for every calibration batch."""

    def __init__(self, view: TransformerView, calibration: Calibration) -> None:
        self.view = view
        self.masks = calibration.token_masks()
        self.hidden: list[torch.Tensor] = []
        self.contexts: list[LayerContext] = []
        with torch.no_grad():
            for batch in calibration.batches:
                hidden, context = view.embed(batch)
                self.hidden.append(hidden)
                self.contexts.append(context)

    def batches(self) -> Iterator[tuple[torch.Tensor, LayerContext, torch.Tensor]]:
        """``(hidden, context, token mask)`` of each batch, for per-batch work."""
        yield from zip(self.hidden, self.contexts, self.masks, strict=True)

    def step(
        self,
        layer: nn.Module,
        visit: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> None:
        """Move every batch through ``layer``, one batch at a time, replacing it in place.

        ``visit(input, output, token_mask)`` sees each batch before its input is dropped.
        """
        for index, (hidden, context, mask) in enumerate(self.batches()):
            with torch.no_grad():
                output = self.view.run_layer(layer, hidden, context)
            if visit is not None:
                visit(hidden, output, mask)
            self.hidden[index] = output

    def tokens(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Flatten per-batch ``(batch, seq, ...)`` tensors to ``(real tokens, ...)``."""
        return torch.cat([t[m] for t, m in zip(tensors, self.masks, strict=True)])


@contextmanager
def capture_inputs(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the first positional input of every call to ``module``."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def capture_outputs(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the output of every call to ``module``."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _args, out: seen.append(out.detach()))
    try:
        yield seen
    finally:
        handle.remove()


def token_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between matching rows of two ``(tokens, d)`` tensors."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
