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
    PreTrainedTokenizerFast,
)

VOCAB = 64


def tiny_llama(layers: int = 4, kv_heads: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        intermediate_size=96,
        vocab_size=VOCAB,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def tiny_decoder(model_type: str, layers: int = 3, seed: int = 0):
    """A tiny Mistral or Qwen2 causal LM (same layout as Llama; Qwen2 has q/k/v biases)."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        vocab_size=VOCAB,
        attn_implementation="sdpa",
    )
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_bert(layers: int = 3, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=96,
        vocab_size=VOCAB,
        attn_implementation="sdpa",
    )
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
