"""A small Llama-architecture causal LM that edgeloom trains itself, offline, on the stdlib.

:func:`build_tiny_llama` trains a byte-level BPE tokenizer and a ``LlamaForCausalLM`` from
scratch on the training split of the running interpreter's standard library
(:func:`edgeloom.data.textcorpus.stdlib_files`), measures perplexity on the held-out split and
saves both as a Hugging Face ``from_pretrained`` folder (safetensors, no pickle). The folder is
cached (:mod:`edgeloom.models.cache`) under ``<cache>/models/tiny-llama-<preset>-<key>``, where
``<key>`` hashes the preset, the corpus (relative paths and sizes of the stdlib files) and the
transformers major version, so a cache hit never trains.

Presets (both fp32, AdamW with linear warmup and cosine decay):

- ``quick``: 4 layers of width 128, vocabulary 2048, 0.4M training tokens; builds in about a
  minute on two idle cores, held-out perplexity about 106 (a unigram model: about 530). For
  tests.
- ``standard``: 8 layers of width 256 (8 heads, MLP 688, 8.4M parameters), vocabulary 4096,
  128-token context, 1.2M training tokens; builds in about 13 minutes on two cores, held-out
  perplexity about 44 (a unigram model: about 650). For benchmarks.

Builds share the CPU with whatever else runs; a busy machine can make them several times slower.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from edgeloom.data.textcorpus import Split, read_texts, stdlib_files, stdlib_root
from edgeloom.models.cache import BUILD_INFO, cached_build, models_dir

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
GRAD_CLIP = 1.0
FINAL_LR_FRACTION = 0.1
"""The cosine schedule decays the learning rate to this fraction of its peak."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TinyLlamaPreset:
    """Architecture and training recipe of one tiny Llama model.

    Attributes
    ----------
    hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size : int
        Llama architecture: width, decoder layers, attention and key/value heads, MLP width.
    vocab_size : int
        Byte-level BPE vocabulary size, special tokens included.
    seq_len : int
        Tokens per training and evaluation block (also the model's context length).
    batch_size, steps, warmup_steps : int
        Blocks per optimiser step, optimiser steps, linear warmup steps.
    learning_rate, weight_decay : float
        Peak AdamW learning rate and decoupled weight decay (matrices only).
    seed : int
        Seed of the weight initialisation and of the batch order.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int
    warmup_steps: int
    learning_rate: float
    weight_decay: float = 0.1
    seed: int = 0


PRESETS: dict[str, TinyLlamaPreset] = {
    "quick": TinyLlamaPreset(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=4,
        intermediate_size=344,
        vocab_size=2048,
        seq_len=128,
        batch_size=16,
        steps=200,
        warmup_steps=20,
        learning_rate=3e-3,
    ),
    "standard": TinyLlamaPreset(
        hidden_size=256,
        num_layers=8,
        num_heads=8,
        num_kv_heads=8,
        intermediate_size=688,
        vocab_size=4096,
        seq_len=128,
        batch_size=16,
        steps=600,
        warmup_steps=40,
        learning_rate=2e-3,
    ),
}


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer.

    Parameters
    ----------
    texts : Sequence[str]
        Training documents.
    vocab_size : int
        Target vocabulary size, including the four special tokens ``<unk>``, ``<s>``, ``</s>``
        and ``<pad>``; a small corpus may yield fewer tokens.

    Returns
    -------
    PreTrainedTokenizerFast
        A tokenizer that adds no special tokens by itself and decodes its encodings back to
        the exact input text; ``save_pretrained`` writes a folder that
        ``AutoTokenizer.from_pretrained`` loads offline.
    """
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )


def token_blocks(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    seq_len: int,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """Tokenize documents into one stream and cut it into non-overlapping blocks.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        Tokenizer with an ``eos_token``.
    texts : Sequence[str]
        Documents, concatenated in order with one EOS token between neighbours.
    seq_len : int
        Tokens per block.
    max_blocks : int, optional
        Keep at most this many blocks (the first ones).

    Returns
    -------
    torch.Tensor
        int64 tensor of shape ``(n, seq_len)``; the incomplete tail of the stream is dropped.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token")
    stream: list[int] = []
    for index, ids in enumerate(tokenizer(list(texts), add_special_tokens=False)["input_ids"]):
        if index:
            stream.append(eos)
        stream.extend(ids)
    count = len(stream) // seq_len
    if max_blocks is not None:
        count = min(count, max_blocks)
    return torch.tensor(stream[: count * seq_len], dtype=torch.long).view(count, seq_len)


def perplexity(model: PreTrainedModel, blocks: torch.Tensor, batch_size: int = 8) -> float:
    """Perplexity of a causal LM on token blocks.

    Parameters
    ----------
    model : PreTrainedModel
        Causal LM whose output has ``logits``; put it in eval mode first.
    blocks : torch.Tensor
        int64 tensor ``(n, seq_len)``; every token after the first of a block is predicted
        from the tokens before it in the same block.
    batch_size : int
        Blocks per forward pass.

    Returns
    -------
    float
        ``exp`` of the mean next-token negative log-likelihood over all predicted tokens.
    """
    if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"need a non-empty (n, seq_len >= 2) block tensor, got {blocks.shape}")
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in blocks.split(batch_size):
            batch = batch.to(model.device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            targets = batch[:, 1:]
            total += F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), reduction="sum"
            ).item()
            count += targets.numel()
    return math.exp(total / count)


def build_tiny_llama(
    preset: str = "standard", cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """The folder of a trained tiny Llama, built on first use and cached.

    Parameters
    ----------
    preset : str
        A key of :data:`PRESETS`.
    cache_dir : str or Path, optional
        Cache root; defaults to ``$EDGELOOM_CACHE`` or ``~/.cache/edgeloom``. Models live in
        its ``models`` subfolder.
    progress : bool
        Show a tqdm bar (step, loss) while training.

    Returns
    -------
    Path
        A ``from_pretrained`` folder with ``config.json``, ``model.safetensors``, the tokenizer
        files and :data:`BUILD_INFO` (preset, corpus fingerprint, steps, timings, held-out
        perplexity).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    spec = PRESETS[preset]
    fingerprint = corpus_fingerprint()
    target = models_dir(cache_dir) / f"tiny-llama-{preset}-{_cache_key(spec, fingerprint)}"
    return cached_build(
        target, lambda staging: _build_into(staging, preset, spec, fingerprint, progress)
    )


def corpus_fingerprint() -> str:
    """Hash of the relative paths and sizes of the stdlib files of both splits."""
    root = stdlib_root()
    digest = hashlib.sha256()
    for split in ("train", "heldout"):
        for path in stdlib_files(split):
            digest.update(
                f"{split}\t{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode()
            )
    return digest.hexdigest()


def _cache_key(spec: TinyLlamaPreset, fingerprint: str) -> str:
    identity = {
        "preset": asdict(spec),
        "corpus": fingerprint,
        "transformers": transformers.__version__.split(".")[0],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def _build_into(
    folder: Path, preset: str, spec: TinyLlamaPreset, fingerprint: str, progress: bool
) -> None:
    started = time.perf_counter()
    train_texts, heldout_texts = _split_texts("train"), _split_texts("heldout")
    tokenizer = train_tokenizer(train_texts, spec.vocab_size)
    train_blocks = token_blocks(tokenizer, train_texts, spec.seq_len)
    heldout_blocks = token_blocks(tokenizer, heldout_texts, spec.seq_len)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(_llama_config(spec, tokenizer))
    _log.info(
        "training tiny-llama-%s: %.1fM parameters, %d training blocks of %d tokens",
        preset,
        model.num_parameters() / 1e6,
        len(train_blocks),
        spec.seq_len,
    )
    fit_started = time.perf_counter()
    final_loss = _fit(model, train_blocks, spec, progress)
    train_seconds = time.perf_counter() - fit_started
    model.eval()
    heldout_perplexity = perplexity(model, heldout_blocks)
    _log.info("tiny-llama-%s: held-out perplexity %.2f", preset, heldout_perplexity)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {
        "preset": preset,
        "preset_fields": asdict(spec),
        "corpus_fingerprint": fingerprint,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "steps": spec.steps,
        "train_tokens": spec.steps * spec.batch_size * spec.seq_len,
        "train_blocks": len(train_blocks),
        "final_train_loss": final_loss,
        "train_seconds": round(train_seconds, 1),
        "build_seconds": round(time.perf_counter() - started, 1),
        "heldout_blocks": len(heldout_blocks),
        "heldout_perplexity": heldout_perplexity,
    }
    (folder / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _split_texts(split: Split) -> list[str]:
    return read_texts(stdlib_files(split))


def _llama_config(spec: TinyLlamaPreset, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.seq_len,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _fit(
    model: LlamaForCausalLM, blocks: torch.Tensor, spec: TinyLlamaPreset, progress: bool
) -> float:
    """Train ``model`` in place; returns the mean loss of the last tenth of the steps."""
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, spec.weight_decay), lr=spec.learning_rate, betas=(0.9, 0.95)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, spec.warmup_steps, spec.steps, FINAL_LR_FRACTION),
    )
    generator = torch.Generator().manual_seed(spec.seed)
    batches = _batches(blocks, spec.batch_size, spec.steps, generator)
    tail = max(1, spec.steps // 10)
    losses: list[float] = []
    model.train()
    bar = tqdm(batches, total=spec.steps, desc="tiny-llama", unit="step", disable=not progress)
    for batch in bar:
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return sum(losses[-tail:]) / len(losses[-tail:])


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (embeddings, projections) but not on norm gains."""
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    return [
        {"params": matrices, "weight_decay": weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final: float = 0.0) -> float:
    """The learning-rate factor of ``step``: linear warm-up to 1, then cosine decay to ``final``
    at ``total_steps`` (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(
    blocks: torch.Tensor, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``steps`` batches of distinct blocks, reshuffled every pass over the data."""
    if len(blocks) < batch_size:
        raise ValueError(f"{len(blocks)} training blocks cannot fill a batch of {batch_size}")
    per_pass = len(blocks) // batch_size
    for step in range(steps):
        if step % per_pass == 0:
            order = torch.randperm(len(blocks), generator=generator)
        start = (step % per_pass) * batch_size
        yield blocks[order[start : start + batch_size]]
