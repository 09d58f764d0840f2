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

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

Family = Literal["decoder", "encoder"]

WIDTHS_KEY = "edgeloom_layer_widths"
WEIGHTS_FILE = "model.safetensors"
ATTN_IMPLEMENTATION = "sdpa"
"""The attention kernel every model is built with (block-by-block runs match the full forward)."""


@dataclass(frozen=True)
class Layout:
    """Where one family keeps its blocks and their parts: module paths, dotted as in
    ``nn.Module.get_submodule``.

    ``layers`` is relative to the top module; the others to one block.
    """

    model_types: frozenset[str]
    """``config.model_type`` values of the family."""
    layers: str
    query: str
    key: str
    value: str
    attn_output: str
    attention_core: str
    """The module holding ``head_dim_attribute`` (and, for decoders, ``layer_idx``)."""
    head_dim_attribute: str
    layer_index_attribute: str | None
    """The attribute of ``attention_core`` that numbers its block (kept in order on removal)."""
    mlp_inputs: tuple[str, ...]
    mlp_output: str
    norm_after: str | None
    """The norm that receives the MLP output plus the residual (post-norm only)."""


LAYOUTS: dict[Family, Layout] = {
    "decoder": Layout(
        model_types=frozenset({"llama", "mistral", "qwen2"}),
        layers="model.layers",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        attn_output="self_attn.o_proj",
        attention_core="self_attn",
        head_dim_attribute="head_dim",
        layer_index_attribute="layer_idx",
        mlp_inputs=("mlp.gate_proj", "mlp.up_proj"),
        mlp_output="mlp.down_proj",
        norm_after=None,
    ),
    "encoder": Layout(
        model_types=frozenset({"bert"}),
        layers="encoder.layer",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        attn_output="attention.output.dense",
        attention_core="attention.self",
        head_dim_attribute="attention_head_size",
        layer_index_attribute=None,
        mlp_inputs=("intermediate.dense",),
        mlp_output="output.dense",
        norm_after="output.LayerNorm",
    ),
}
"""The one place that knows each family's module layout."""

DECODER_TYPES = LAYOUTS["decoder"].model_types
"""Causal LMs with the Llama layout (Llama, Mistral, Qwen2)."""
ENCODER_TYPES = LAYOUTS["encoder"].model_types
"""BERT-style encoders (BERT, MiniLM)."""


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

    @property
    def num_heads(self) -> int:
        return self.q.out_features // self.head_dim


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
    cache: object | None = None
    """A key/value cache the decoder blocks extend (anything with Hugging Face's
    ``update(keys, values, layer_idx, ...)``); None runs without one."""


class TransformerView:
    """Uniform access to the blocks of a decoder or encoder model.

    Parameters
    ----------
    model : nn.Module
        A ``LlamaForCausalLM``-style or ``BertModel``-style module with a Hugging Face
        ``config``.
    """

    def __init__(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        if not isinstance(config, PreTrainedConfig):
            raise TypeError(f"{type(model).__name__} has no Hugging Face config")
        self.model = model
        self.config: PreTrainedConfig = config
        self.family = model_family(config)
        self.layout = LAYOUTS[self.family]

    @property
    def layers(self) -> nn.ModuleList:
        layers = self.model.get_submodule(self.layout.layers)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{self.layout.layers} is a {type(layers).__name__}, not a ModuleList")
        return layers

    def attention(self, layer: nn.Module) -> Attention:
        layout = self.layout
        head_dim = getattr(layer.get_submodule(layout.attention_core), layout.head_dim_attribute)
        return Attention(
            _linear(layer, layout.query),
            _linear(layer, layout.key),
            _linear(layer, layout.value),
            _linear(layer, layout.attn_output),
            int(head_dim),
        )

    def mlp(self, layer: nn.Module) -> Mlp:
        layout = self.layout
        norm = layer.get_submodule(layout.norm_after) if layout.norm_after is not None else None
        return Mlp(
            [_linear(layer, path) for path in layout.mlp_inputs],
            _linear(layer, layout.mlp_output),
            norm,
        )

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, LayerContext]:
        """Embed a tokenised batch: the input of the first block, and its context."""
        if self.family == "decoder":
            inner = self.model.get_submodule("model")
            hidden = _tensor(inner.get_submodule("embed_tokens")(batch["input_ids"]))
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            # no cache; positional, as transformers renamed it (past_key_values -> cache)
            mask = create_causal_mask(
                self.config, hidden, batch.get("attention_mask"), None, position_ids=position_ids
            )
            cos, sin = inner.get_submodule("rotary_emb")(hidden, position_ids)
            return hidden, LayerContext(_mask(mask), (cos, sin), position_ids)
        embeddings = self.model.get_submodule("embeddings")
        hidden = _tensor(
            embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        )
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=batch.get("attention_mask")
        )
        return hidden, LayerContext(_mask(mask))

    def continuation(self, hidden: torch.Tensor, start: int, cache: object) -> LayerContext:
        """The context of a decoder's new tokens ``hidden`` at positions ``start, start+1, ...``,
        after ``start`` tokens whose keys and values ``cache`` holds.

        Each new token sees every cached token and the new ones up to itself. Blocks run with
        this context extend ``cache``, so a sequence can be fed a few tokens at a time.
        """
        if self.family != "decoder":
            raise ValueError("incremental runs need a decoder")
        count = hidden.shape[1]
        positions = torch.arange(start, start + count, device=hidden.device)
        keys = torch.arange(start + count, device=hidden.device)
        mask = (keys.unsqueeze(0) <= positions.unsqueeze(1))[None, None]
        position_ids = positions.unsqueeze(0)
        cos, sin = self.model.get_submodule("model.rotary_emb")(hidden, position_ids)
        return LayerContext(mask, (cos, sin), position_ids, cache)

    def run_layer(
        self, layer: nn.Module, hidden: torch.Tensor, context: LayerContext
    ) -> torch.Tensor:
        """Run one block on its input hidden states."""
        if self.family == "decoder":
            # the cache positionally: transformers renamed it (past_key_values -> cache)
            return _tensor(
                layer(
                    hidden,
                    context.attention_mask,
                    context.position_ids,
                    context.cache,
                    position_embeddings=context.position_embeddings,
                )
            )
        return _tensor(layer(hidden, attention_mask=context.attention_mask))

    def widths(self) -> list[LayerWidths]:
        """The current shape of every block."""
        result = []
        for layer in self.layers:
            attn, mlp = self.attention(layer), self.mlp(layer)
            result.append(
                LayerWidths(
                    intermediate_size=mlp.width,
                    num_heads=attn.num_heads,
                    num_kv_heads=attn.num_groups,
                    attn_output_bias=_has_bias(attn.o),
                    mlp_output_bias=_has_bias(mlp.output),
                )
            )
        return result

    def block_parameters(self) -> int:
        """Parameters inside the blocks: what structured pruning can remove."""
        return sum(p.numel() for p in self.layers.parameters())


def model_family(config: PreTrainedConfig) -> Family:
    """The family of a Hugging Face config, or a ValueError naming its ``model_type``."""
    for family, layout in LAYOUTS.items():
        if config.model_type in layout.model_types:
            return family
    supported = ", ".join(sorted(DECODER_TYPES | ENCODER_TYPES))
    raise ValueError(f"model_type {config.model_type!r} is not supported (supported: {supported})")


def _linear(root: nn.Module, path: str) -> nn.Linear:
    module = root.get_submodule(path)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{path} is a {type(module).__name__}, not a Linear")
    return module


def _tensor(value: object) -> torch.Tensor:
    """A module's hidden-states output (the first item where a block returns a tuple)."""
    if isinstance(value, tuple):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected hidden states, got {type(value).__name__}")
    return value


def _mask(mask: object) -> torch.Tensor | None:
    """The dense attention mask built for ``sdpa`` (None when no masking is needed)."""
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"expected a dense attention mask, got {type(mask).__name__}")
    return mask


def _has_bias(linear: nn.Linear) -> bool:
    # torch annotates Linear.bias as a Tensor, but it is None for bias=False
    bias: torch.Tensor | None = linear.bias
    return bias is not None


def drop_layers(view: TransformerView, indices: list[int]) -> None:
    """Remove whole blocks and renumber the rest (decoder attention keeps a layer index)."""
    doomed = set(indices)
    if len(doomed) >= len(view.layers):
        raise ValueError("cannot remove every layer")
    kept = [layer for i, layer in enumerate(view.layers) if i not in doomed]
    layers = view.layers
    layers._modules.clear()
    numbering = view.layout.layer_index_attribute
    for i, layer in enumerate(kept):
        layers.append(layer)
        if numbering is not None:
            setattr(layer.get_submodule(view.layout.attention_core), numbering, i)
    config = view.config
    config.num_hidden_layers = len(kept)
    layer_types: list[str] | None = getattr(config, "layer_types", None)
    if layer_types:
        config.layer_types = [t for i, t in enumerate(layer_types) if i not in doomed]


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
        if not _has_bias(linear):
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
            if _has_bias(linear):
                linear.bias = nn.Parameter(linear.bias[rows].clone())
        if columns is not None:
            weight = weight[:, columns]
        linear.weight = nn.Parameter(weight.clone())
    linear.out_features, linear.in_features = linear.weight.shape


def load_model(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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
    widths: list[dict[str, Any]] | None = getattr(config, WIDTHS_KEY, None)
    model: PreTrainedModel
    if widths is None:
        # transformers types the result as the model alone, even with output_loading_info
        model, info = cast(
            tuple[PreTrainedModel, dict[str, list[str]]],
            auto.from_pretrained(
                folder,
                local_files_only=True,
                attn_implementation=ATTN_IMPLEMENTATION,
                output_loading_info=True,
            ),
        )
        _check_complete(folder, info["missing_keys"], model)
    else:
        # two calls, not one on ``auto``: mypy cannot look through the union of the classes
        # to see that from_config belongs to transformers
        kernel = ATTN_IMPLEMENTATION
        if family == "decoder":
            model = AutoModelForCausalLM.from_config(config, attn_implementation=kernel)
        else:
            model = AutoModel.from_config(config, attn_implementation=kernel)
        _reshape(TransformerView(model), [LayerWidths(**w) for w in widths])
        _load_weights(model, folder / WEIGHTS_FILE)
    model.eval()
    return model, tokenizer


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> Path:
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


def _load_weights(model: PreTrainedModel, weights: Path) -> None:
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{weights}: weights not in config.json's model: {unexpected[:5]}")
    _check_complete(weights, missing, model)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()


def _check_complete(source: Path, missing: Iterable[str], model: nn.Module) -> None:
    """Refuse weights that leave part of the model randomly initialised (tied ones aside)."""
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    untied = sorted(key for key in missing if key not in tied)
    if untied:
        raise ValueError(f"{source}: no weights for {untied[:5]}")
