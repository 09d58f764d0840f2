"""Transformer models from Hugging Face folders, and the one place that knows their layout.

Pruning, splitting and LoRA all need the same things: the list of blocks, each block's
attention projections and MLP, and a way to run one block on given hidden states. Two
families are supported:

- ``decoder``: Llama-style causal LMs (Llama, Mistral, Qwen2): ``model.model.layers``,
  ``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, pre-norm, rotary positions.
- ``encoder``: BERT-style encoders (BERT, MiniLM): ``model.encoder.layer``,
  ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
  ``output.dense``, post-norm.

A pruned model keeps its family's ``config.json`` with one addition, ``edgeloom_layer_widths``:
one entry per remaining block with its MLP width, head counts and which output projections
gained a bias. `load_model` rebuilds blocks of those widths before loading the weights, so a
pruned folder reloads into an equivalent module without pickle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

Family = Literal["decoder", "encoder"]

WIDTHS_KEY = "edgeloom_layer_widths"
WEIGHTS_FILE = "model.safetensors"

_DECODER_TYPES = frozenset({"llama", "mistral", "qwen2"})
_ENCODER_TYPES = frozenset({"bert"})


@dataclass(frozen=True)
class LayerWidths:
    """The shape of one block after pruning, as recorded in ``config.json``."""

    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    attn_output_bias: bool = False
    mlp_output_bias: bool = False


@dataclass
class Attention:
    """The projections of one block's self-attention.

    Heads are pruned in groups: one key/value head with the query heads that share it
    (a single head when the model has no grouped-query attention).
    """

    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def num_groups(self) -> int:
        return self.k.out_features // self.head_dim

    @property
    def heads_per_group(self) -> int:
        return self.q.out_features // self.k.out_features


@dataclass
class Mlp:
    """The dense block of one layer: ``inputs`` produce the hidden neurons, ``output`` reads them.

    ``norm_after`` is the normalisation that receives ``output``'s result plus the residual
    (post-norm encoders); ``None`` when that sum is the block's output (pre-norm decoders).
    """

    inputs: list[nn.Linear]
    output: nn.Linear
    norm_after: nn.Module | None = None

    @property
    def width(self) -> int:
        return self.output.in_features


@dataclass
class LayerContext:
    """What every block of one batch needs besides its hidden states."""

    attention_mask: torch.Tensor | None
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None
    position_ids: torch.Tensor | None = None


class TransformerView:
    """Uniform access to the blocks of a decoder or encoder model.

    Parameters
    ----------
    model : nn.Module
        A ``LlamaForCausalLM``-style or ``BertModel``-style module.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.family = model_family(model.config)

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        if self.family == "decoder":
            return self.model.model.layers
        return self.model.encoder.layer

    def attention(self, layer: nn.Module) -> Attention:
        if self.family == "decoder":
            attn = layer.self_attn
            return Attention(attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, attn.head_dim)
        attn = layer.attention
        return Attention(
            attn.self.query,
            attn.self.key,
            attn.self.value,
            attn.output.dense,
            attn.self.attention_head_size,
        )

    def mlp(self, layer: nn.Module) -> Mlp:
        if self.family == "decoder":
            return Mlp([layer.mlp.gate_proj, layer.mlp.up_proj], layer.mlp.down_proj)
        return Mlp([layer.intermediate.dense], layer.output.dense, layer.output.LayerNorm)

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, LayerContext]:
        """Embed a tokenised batch: the input of the first block, and its context."""
        if self.family == "decoder":
            inner = self.model.model
            hidden = inner.embed_tokens(batch["input_ids"])
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            mask = create_causal_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=batch.get("attention_mask"),
                past_key_values=None,
                position_ids=position_ids,
            )
            return hidden, LayerContext(mask, inner.rotary_emb(hidden, position_ids), position_ids)
        hidden = self.model.embeddings(
            input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids")
        )
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=batch.get("attention_mask")
        )
        return hidden, LayerContext(mask)

    def run_layer(
        self, layer: nn.Module, hidden: torch.Tensor, context: LayerContext
    ) -> torch.Tensor:
        """Run one block on its input hidden states."""
        if self.family == "decoder":
            return layer(
                hidden,
                attention_mask=context.attention_mask,
                position_embeddings=context.position_embeddings,
                position_ids=context.position_ids,
            )
        return layer(hidden, attention_mask=context.attention_mask)

    def widths(self) -> list[LayerWidths]:
        """The current shape of every block."""
        result = []
        for layer in self.layers:
            attn, mlp = self.attention(layer), self.mlp(layer)
            result.append(
                LayerWidths(
                    intermediate_size=mlp.width,
                    num_heads=attn.q.out_features // attn.head_dim,
                    num_kv_heads=attn.num_groups,
                    attn_output_bias=attn.o.bias is not None,
                    mlp_output_bias=mlp.output.bias is not None,
                )
            )
        return result

    def block_parameters(self) -> int:
        """Parameters inside the blocks: what structured pruning can remove."""
        return sum(p.numel() for p in self.layers.parameters())


def model_family(config) -> Family:
    """The family of a Hugging Face config, or a ValueError naming its ``model_type``."""
    if config.model_type in _DECODER_TYPES:
        return "decoder"
    if config.model_type in _ENCODER_TYPES:
        return "encoder"
    supported = ", ".join(sorted(_DECODER_TYPES | _ENCODER_TYPES))
    raise ValueError(f"model_type {config.model_type!r} is not supported (supported: {supported})")


def drop_layers(view: TransformerView, indices: list[int]) -> None:
    """Remove whole blocks and renumber the rest (decoder attention keeps a layer index)."""
    doomed = set(indices)
    if len(doomed) >= len(view.layers):
        raise ValueError("cannot remove every layer")
    kept = [layer for i, layer in enumerate(view.layers) if i not in doomed]
    layers = view.layers
    layers._modules.clear()
    for i, layer in enumerate(kept):
        layers.append(layer)
        if view.family == "decoder":
            layer.self_attn.layer_idx = i
    view.config.num_hidden_layers = len(kept)
    if getattr(view.config, "layer_types", None):
        view.config.layer_types = [
            t for i, t in enumerate(view.config.layer_types) if i not in doomed
        ]


def keep_mlp_neurons(mlp: Mlp, keep: torch.Tensor) -> None:
    """Keep only the hidden neurons ``keep`` (sorted indices) of a dense block."""
    for linear in mlp.inputs:
        _slice_linear(linear, rows=keep)
    _slice_linear(mlp.output, columns=keep)


def keep_head_groups(attn: Attention, keep: torch.Tensor) -> None:
    """Keep only the head groups ``keep`` (sorted indices) of an attention block."""
    if keep.numel() == 0:
        raise ValueError("an attention block must keep at least one head group")
    kv_channels = _group_channels(keep, attn.head_dim)
    q_channels = _group_channels(keep, attn.head_dim * attn.heads_per_group)
    _slice_linear(attn.q, rows=q_channels)
    _slice_linear(attn.k, rows=kv_channels)
    _slice_linear(attn.v, rows=kv_channels)
    _slice_linear(attn.o, columns=q_channels)


def add_output_bias(linear: nn.Linear, delta: torch.Tensor) -> None:
    """Add ``delta`` to a projection's bias, creating the bias when it has none."""
    with torch.no_grad():
        if linear.bias is None:
            linear.bias = nn.Parameter(torch.zeros_like(delta, dtype=linear.weight.dtype))
        linear.bias.add_(delta.to(linear.weight.dtype))


def group_channels(attn: Attention, groups: torch.Tensor) -> torch.Tensor:
    """The ``o`` input channels that belong to the given head groups."""
    return _group_channels(groups, attn.head_dim * attn.heads_per_group)


def _group_channels(groups: torch.Tensor, size: int) -> torch.Tensor:
    offsets = torch.arange(size, device=groups.device)
    return (groups.unsqueeze(1) * size + offsets).reshape(-1)


def _slice_linear(
    linear: nn.Linear, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None
) -> None:
    with torch.no_grad():
        weight = linear.weight
        if rows is not None:
            weight = weight[rows]
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias[rows].clone())
        if columns is not None:
            weight = weight[:, columns]
        linear.weight = nn.Parameter(weight.clone())
    linear.out_features, linear.in_features = linear.weight.shape


def load_model(path: str | Path) -> tuple[nn.Module, object]:
    """Load a model folder (plain or pruned by edgeloom) and its tokenizer, offline.

    Causal LMs load with their LM head (``AutoModelForCausalLM``); encoders as the bare
    encoder (``AutoModel``).
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: config.json is missing")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    family = model_family(config)
    auto = AutoModelForCausalLM if family == "decoder" else AutoModel
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    widths = getattr(config, WIDTHS_KEY, None)
    if widths is None:
        model, info = auto.from_pretrained(
            folder, local_files_only=True, attn_implementation="sdpa", output_loading_info=True
        )
        _check_complete(folder, info["missing_keys"], model)
    else:
        model = auto.from_config(config, attn_implementation="sdpa")
        _reshape(TransformerView(model), [LayerWidths(**w) for w in widths])
        _load_weights(model, folder / WEIGHTS_FILE)
    return model.eval(), tokenizer


def save_model(model: nn.Module, tokenizer, path: str | Path) -> Path:
    """Save a (possibly pruned) model as safetensors + config.json with per-layer widths."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    view = TransformerView(model)
    setattr(model.config, WIDTHS_KEY, [asdict(w) for w in view.widths()])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _reshape(view: TransformerView, widths: list[LayerWidths]) -> None:
    if len(widths) != len(view.layers):
        raise ValueError(
            f"config.json: {WIDTHS_KEY} has {len(widths)} entries for {len(view.layers)} layers"
        )
    for layer, width in zip(view.layers, widths, strict=True):
        attn, mlp = view.attention(layer), view.mlp(layer)
        keep_mlp_neurons(mlp, torch.arange(width.intermediate_size))
        keep_head_groups(attn, torch.arange(width.num_kv_heads))
        if width.attn_output_bias:
            add_output_bias(attn.o, torch.zeros(attn.o.out_features))
        if width.mlp_output_bias:
            add_output_bias(mlp.output, torch.zeros(mlp.output.out_features))


def _load_weights(model: nn.Module, weights: Path) -> None:
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{weights}: weights not in config.json's model: {unexpected[:5]}")
    _check_complete(weights, missing, model)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()


def _check_complete(source: Path, missing, model: nn.Module) -> None:
    """Refuse weights that leave part of the model randomly initialised (tied ones aside)."""
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    untied = sorted(key for key in missing if key not in tied)
    if untied:
        raise ValueError(f"{source}: no weights for {untied[:5]}")
