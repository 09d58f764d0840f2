"""HAT's cut of a causal LM into an input, a middle and an output submodel.

HAT (Xie et al., arXiv 2503.18989) keeps the **input submodel** (token embeddings and the first
``k`` decoder blocks) and the **output submodel** (the last ``m`` blocks, the final norm and the
LM head) on the device, and runs the **middle submodel** (every block in between) in the cloud.
Only hidden states cross between them. Each part runs a few tokens at a time against a
:class:`KVCache` of its own, which the speculative decoder crops when drafts are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeloom.models.llm import TransformerView


class KVCache:
    """The keys and values one part's blocks have seen for one sequence, croppable.

    It answers the one call Hugging Face attention modules make on a cache,
    ``update(keys, values, layer_idx, ...)``, keyed by the block's ``layer_idx``: each part keeps
    a cache of its own whatever the numbering of its blocks.
    """

    def __init__(self) -> None:
        self._keys: dict[int, torch.Tensor] = {}
        self._values: dict[int, torch.Tensor] = {}

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: object, **__: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx in self._keys:
            keys = torch.cat([self._keys[layer_idx], keys], dim=-2)
            values = torch.cat([self._values[layer_idx], values], dim=-2)
        self._keys[layer_idx], self._values[layer_idx] = keys, values
        return keys, values

    @property
    def length(self) -> int:
        """Positions cached (the same in every block once a forward pass is complete)."""
        return next(iter(self._keys.values())).shape[-2] if self._keys else 0

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        if length < 0:
            raise ValueError(f"cannot crop a cache to {length} positions")
        for store in (self._keys, self._values):
            for index, tensor in store.items():
                store[index] = tensor[..., :length, :]

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for s in (self._keys, self._values) for t in s.values()
        )


@dataclass(frozen=True)
class HatSplit:
    """Where to cut: ``input_layers`` blocks stay with the embeddings on the device,
    ``output_layers`` blocks with the LM head; the rest form the cloud's middle."""

    input_layers: int = 1
    output_layers: int = 1

    def check(self, num_layers: int) -> None:
        """A ValueError naming the field when this split does not fit ``num_layers`` blocks."""
        if self.input_layers < 1:
            raise ValueError(f"split.inputLayers must be at least 1, got {self.input_layers}")
        if self.output_layers < 1:
            raise ValueError(f"split.outputLayers must be at least 1, got {self.output_layers}")
        if self.input_layers + self.output_layers >= num_layers:
            raise ValueError(
                f"split.inputLayers + split.outputLayers must leave a middle: "
                f"{self.input_layers} + {self.output_layers} of {num_layers} layers"
            )


class HatParts:
    """The three submodels of one decoder, sharing its modules (nothing is copied).

    Parameters
    ----------
    model : nn.Module
        A Llama-layout causal LM (``TransformerView`` family ``decoder``).
    split : HatSplit
        How many blocks the input and the output submodels take.
    """

    def __init__(self, model: nn.Module, split: HatSplit) -> None:
        self.view = TransformerView(model)
        if self.view.family != "decoder":
            raise ValueError("HAT splits causal LMs; this model is an encoder")
        layers = list(self.view.layers)
        split.check(len(layers))
        self.split = split
        self.input_blocks = layers[: split.input_layers]
        self.middle_blocks = layers[split.input_layers : len(layers) - split.output_layers]
        self.output_blocks = layers[len(layers) - split.output_layers :]
        inner = model.get_submodule("model")
        self._embed = inner.get_submodule("embed_tokens")
        self._norm = inner.get_submodule("norm")
        self._head = model.get_submodule("lm_head")

    @property
    def hidden_size(self) -> int:
        return int(self.view.config.hidden_size)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(batch, n, d)`` of ``(batch, n)`` ids."""
        embedded: torch.Tensor = self._embed(token_ids)
        return embedded

    def run(
        self, blocks: list[nn.Module], hidden: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Run ``blocks`` on the new positions ``hidden``, after the ones ``cache`` holds
        (a whole sequence from position 0 when there is no cache)."""
        start = cache.length if cache is not None else 0
        context = self.view.continuation(hidden, start, cache)
        for block in blocks:
            hidden = self.view.run_layer(block, hidden, context)
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head's logits on the output submodel's last hidden states (norm included)."""
        logits: torch.Tensor = self._head(self._norm(hidden))
        return logits
