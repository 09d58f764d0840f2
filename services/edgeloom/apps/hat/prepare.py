"""HAT's prepare step: train the adapter of one (model, split, adapter) once, and cache it.

The adapter learns the full model's next-token distribution (:mod:`edgeloom.algos.hat.distill`)
on real text: standard-library sources (:mod:`edgeloom.data.textcorpus`) and, when the model has
a chat template, the same documents rendered as chat turns with it (the first paragraph as the
user's message, the rest as the assistant's), so the draft also knows the template's tokens.
Quality is measured on held-out files: KL to the full model and top-1 agreement (the greedy
acceptance rate of one draft token), before and after training.

The result is a folder ``<cache>/hat-adapters/<model>-<key>`` with ``adapter.safetensors``,
``adapter.json`` and :data:`~edgeloom.models.cache.BUILD_INFO` (recipe and figures), where
``<key>`` hashes the model, the split, the adapter spec, the training settings and the corpus,
so a second prepare of the same thing is a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec, save_adapter
from edgeloom.algos.hat.distill import DistillSettings, distill, draft_quality
from edgeloom.algos.hat.split import HatParts, HatSplit
from edgeloom.data.mnist1d import cache_dir as default_cache_dir
from edgeloom.data.textcorpus import Split, read_texts, stdlib_files
from edgeloom.models.cache import BUILD_INFO, cached_build
from edgeloom.models.llm import load_model
from edgeloom.models.tiny_llama import corpus_fingerprint, token_blocks

SEQ_LEN = 128
"""Tokens per training block."""
HELDOUT_BLOCKS = 16
CHARS_PER_BLOCK = 600
"""Characters of source read per wanted block (a block of 128 tokens is about 400-500)."""


def prepare_adapter(
    model_folder: str | Path,
    split: HatSplit,
    spec: AdapterSpec,
    settings: DistillSettings,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """The folder of the trained adapter, trained on first use and cached."""
    folder = Path(model_folder)
    key = _key(folder, split, spec, settings)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "hat-adapters" / f"{folder.name}-{key}"
    return cached_build(
        target, lambda staging: _train_into(staging, folder, split, spec, settings, progress)
    )


def training_blocks(
    tokenizer: PreTrainedTokenizerBase, split: Split, blocks: int, seq_len: int = SEQ_LEN
) -> torch.Tensor:
    """About ``blocks`` token blocks of one corpus split: plain documents, then (with a chat
    template) the same documents as chat turns, interleaved."""
    texts = _documents(split, blocks * CHARS_PER_BLOCK)
    if tokenizer.chat_template:
        texts = [t for pair in zip(texts, chat_turns(tokenizer, texts), strict=True) for t in pair]
    return token_blocks(tokenizer, texts, seq_len, max_blocks=blocks)


def chat_turns(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[str]:
    """Each document as one exchange in the model's chat template: its first paragraph as the
    user's message, the rest as the assistant's reply."""
    rendered = []
    for text in texts:
        question, _, answer = text.strip().partition("\n\n")
        messages = [
            {"role": "user", "content": question.strip()},
            {"role": "assistant", "content": answer.strip() or question.strip()},
        ]
        chat = tokenizer.apply_chat_template(messages, tokenize=False)
        rendered.append(str(chat))
    return rendered


def _documents(split: Split, chars: int, longest: int = 4000) -> list[str]:
    """Standard-library documents of ``split`` in path order, about ``chars`` characters in all;
    a file longer than ``longest`` is cut at a paragraph boundary, so that many files count."""
    chosen, total = [], 0
    for path in stdlib_files(split):  # read one at a time: most files are never needed
        [text] = read_texts([path])
        if len(text) > longest:
            cut = text.rfind("\n\n", 0, longest)
            text = text[: cut if cut > 0 else longest]
        if text.strip():
            chosen.append(text)
            total += len(text)
        if total >= chars:
            break
    return chosen


def _train_into(
    staging: Path,
    model_folder: Path,
    split: HatSplit,
    spec: AdapterSpec,
    settings: DistillSettings,
    progress: Callable[[int, float], None] | None,
) -> None:
    started = time.perf_counter()
    model, tokenizer = load_model(model_folder)
    parts = HatParts(model, split)
    torch.manual_seed(settings.seed)
    adapter = Adapter(parts, spec)
    train = training_blocks(tokenizer, "train", settings.steps * settings.batch_size)
    heldout = training_blocks(tokenizer, "heldout", HELDOUT_BLOCKS)
    before = draft_quality(parts, adapter, heldout)
    losses = distill(parts, adapter, train, settings, progress)
    after = draft_quality(parts, adapter, heldout)
    save_adapter(adapter, split, staging)
    info = {
        "model": str(model_folder),
        "split": asdict(split),
        "adapter": asdict(spec),
        "distill": asdict(settings),
        "corpus": {"train_blocks": len(train), "heldout_blocks": len(heldout), "seq_len": SEQ_LEN},
        "heldout_before": asdict(before),
        "heldout_after": asdict(after),
        "final_loss": losses[-1],
        "adapter_parameters": sum(p.numel() for p in adapter.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (staging / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _key(model_folder: Path, split: HatSplit, spec: AdapterSpec, settings: DistillSettings) -> str:
    config = model_folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{model_folder} is not a model folder: config.json is missing")
    weights = hashlib.sha256(config.read_bytes())
    for path in sorted(model_folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            weights.update(hashlib.file_digest(handle, "sha256").digest())
    identity = {
        "model": weights.hexdigest(),
        "split": asdict(split),
        "adapter": asdict(spec),
        "distill": asdict(settings),
        "corpus": corpus_fingerprint(),
        "seq_len": SEQ_LEN,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
