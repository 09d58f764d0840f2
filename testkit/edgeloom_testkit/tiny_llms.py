"""Tiny randomly initialised transformers for unit tests (built from a config, no files)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from edgeloom.models.llm import ATTN_IMPLEMENTATION

VOCAB = 64
_SIZES = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "vocab_size": VOCAB,
    "attn_implementation": ATTN_IMPLEMENTATION,
}
"""The dimensions every tiny model shares (4 heads of 16 over a width of 64)."""


def tiny_llama(layers: int = 4, kv_heads: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(num_hidden_layers=layers, num_key_value_heads=kv_heads, **_SIZES)
    return LlamaForCausalLM(config).eval()


def tiny_decoder(
    model_type: str, layers: int = 3, kv_heads: int = 2, seed: int = 0
) -> PreTrainedModel:
    """A tiny causal LM of the Llama layout: Llama, Mistral or Qwen2 (which has q/k/v biases)."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type, num_hidden_layers=layers, num_key_value_heads=kv_heads, **_SIZES
    )
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config)
    return model.eval()


def tiny_bert(layers: int = 3, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(num_hidden_layers=layers, **_SIZES)
    return BertModel(config).eval()


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"w{i}": i for i in range(VOCAB - 1)} | {"[UNK]": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="w0")


def token_batch(batch: int = 4, length: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB - 1, (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def greedy_tokens(model: PreTrainedModel, prompt: list[int], new_tokens: int) -> list[int]:
    """The full model's greedy continuation of ``prompt``, exactly ``new_tokens`` long (no
    stop at an end-of-sequence token): the reference speculative decoding must reproduce."""
    out = model.generate(  # type: ignore[operator]
        torch.tensor([prompt]),
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return [int(t) for t in out[0, len(prompt) :]]
