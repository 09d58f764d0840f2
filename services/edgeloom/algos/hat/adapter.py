"""The adapter that stands in for the middle submodel on the device.

``out_sub(adapter(in_sub(x)))`` is HAT's on-device draft model. Two kinds:

- ``decoder``: ``depth`` decoder blocks initialised as copies of middle blocks spread evenly over
  the middle (so the draft starts as a shallow version of the full model). Kangaroo
  (``Equationliu/Kangaroo``, ``kangaroo/adapter.py``) uses one such block; starting from copies of
  the model's own blocks rather than at random is edgeloom's choice [R].
- ``mlp``: ``depth`` residual MLP blocks ``h + W2 silu(W1 rmsnorm(h))`` whose output layer
  starts at zero, so the untrained adapter is the identity and the draft is the model with its
  middle skipped [R].

Weights are saved as safetensors beside a JSON file with the spec and split; loading rebuilds the
adapter's modules from the model it belongs to.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgeloom.algos.hat.split import HatParts, HatSplit, KVCache

AdapterKind = Literal["decoder", "mlp"]
WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter.json"


@dataclass(frozen=True)
class AdapterSpec:
    """The shape of an adapter: its kind, how many blocks, and the MLP kind's hidden width
    (``None``: the model's own MLP width)."""

    kind: AdapterKind = "decoder"
    depth: int = 1
    width: int | None = None

    def check(self) -> None:
        if self.kind not in ("decoder", "mlp"):
            raise ValueError(f"adapter.kind must be 'decoder' or 'mlp', got {self.kind!r}")
        if self.depth < 1:
            raise ValueError(f"adapter.depth must be at least 1, got {self.depth}")
        if self.width is not None and self.width < 1:
            raise ValueError(f"adapter.width must be positive, got {self.width}")


class ResidualMlp(nn.Module):
    """``h + W2 silu(W1 rmsnorm(h))``, starting as the identity (``W2 = 0``)."""

    def __init__(self, hidden_size: int, width: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(hidden_size, eps=eps)
        self.up = nn.Linear(hidden_size, width, bias=False)
        self.down = nn.Linear(width, hidden_size, bias=False)
        nn.init.zeros_(self.down.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        delta: torch.Tensor = self.down(nn.functional.silu(self.up(self.norm(hidden))))
        return hidden + delta


class Adapter(nn.Module):
    """An adapter of ``spec`` for ``parts``' model; ``forward`` maps input-submodel hidden
    states to stand-ins for the middle submodel's output."""

    def __init__(self, parts: HatParts, spec: AdapterSpec) -> None:
        super().__init__()
        spec.check()
        self.spec = spec
        self._parts = (parts,)  # a tuple keeps the model out of this module's parameters
        config = parts.view.config
        blocks: list[nn.Module]
        if spec.kind == "decoder":
            blocks = [
                copy.deepcopy(parts.middle_blocks[i])
                for i in _spread(len(parts.middle_blocks), spec.depth)
            ]
            numbering = parts.view.layout.layer_index_attribute
            for index, block in enumerate(blocks):
                if numbering is not None:
                    setattr(block.get_submodule(parts.view.layout.attention_core), numbering, index)
        else:
            width = spec.width or int(config.intermediate_size)
            eps = float(getattr(config, "rms_norm_eps", 1e-6))
            blocks = [ResidualMlp(parts.hidden_size, width, eps) for _ in range(spec.depth)]
        reference = next(parts.view.model.parameters())
        self.blocks = nn.ModuleList(blocks).to(dtype=reference.dtype, device=reference.device)

    def forward(self, hidden: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if self.spec.kind == "decoder":
            return self._parts[0].run(list(self.blocks), hidden, cache)
        for block in self.blocks:
            hidden = block(hidden)
        return hidden


def _spread(count: int, picks: int) -> list[int]:
    """``picks`` indices spread evenly over ``range(count)`` (repeating when picks > count)."""
    return [min(count - 1, (2 * i + 1) * count // (2 * picks)) for i in range(picks)]


def save_adapter(adapter: Adapter, split: HatSplit, folder: str | Path) -> Path:
    """Write ``adapter.safetensors`` and ``adapter.json`` (spec and split) into ``folder``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in adapter.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE))
    config = {"spec": asdict(adapter.spec), "split": asdict(split)}
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return path


def load_adapter(model: nn.Module, folder: str | Path) -> tuple[HatParts, Adapter]:
    """The split of ``model`` and the adapter saved in ``folder`` (see :func:`save_adapter`)."""
    path = Path(folder)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        spec = AdapterSpec(**config["spec"])
        split = HatSplit(**config["split"])
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{path} is not an adapter folder: {CONFIG_FILE} is missing"
        ) from error
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path / CONFIG_FILE}: not an adapter config ({error})") from error
    parts = HatParts(model, split)
    adapter = Adapter(parts, spec)
    adapter.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    return parts, adapter
