"""Build the quick tiny Llama for real: it trains, reloads, beats a unigram model and is cached."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from edgeloom.data.textcorpus import read_texts, stdlib_files
from edgeloom.models import tiny_llama
from edgeloom.models.llm import load_model
from edgeloom.models.tiny_llama import (
    BUILD_INFO,
    PRESETS,
    build_tiny_llama,
    perplexity,
    token_blocks,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama("quick", cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _unigram_perplexity(train: torch.Tensor, heldout: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of add-one-smoothed training-token frequencies on the held-out targets."""
    counts = Counter(train.flatten().tolist())
    total = sum(counts.values()) + vocab_size
    targets = heldout[:, 1:].flatten().tolist()
    nll = -sum(math.log((counts[token] + 1) / total) for token in targets)
    return math.exp(nll / len(targets))


def test_quick_build_writes_a_reloadable_model_folder(quick_model: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", BUILD_INFO):
        assert (quick_model / name).is_file(), name
    assert not list(quick_model.glob("*.bin")) and not list(quick_model.glob("*.pt"))
    info = json.loads((quick_model / BUILD_INFO).read_text())
    preset = PRESETS["quick"]
    assert info["preset"] == "quick" and info["preset_fields"]["steps"] == preset.steps
    assert info["steps"] == preset.steps and len(info["corpus_fingerprint"]) == 64
    assert 0 < info["train_seconds"] <= info["build_seconds"]
    model, tokenizer = load_model(quick_model)
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert model.config.num_hidden_layers == preset.num_layers
    assert model.config.tie_word_embeddings is False
    assert len(tokenizer) == model.config.vocab_size == preset.vocab_size
    text = "def main():\n    return 0\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_quick_model_clearly_beats_a_unigram_model(quick_model: Path) -> None:
    model, tokenizer = load_model(quick_model)
    seq_len = PRESETS["quick"].seq_len
    heldout = token_blocks(tokenizer, read_texts(stdlib_files("heldout")), seq_len)
    train = token_blocks(tokenizer, read_texts(stdlib_files("train")), seq_len)
    unigram = _unigram_perplexity(train, heldout, len(tokenizer))
    value = perplexity(model, heldout)
    recorded = json.loads((quick_model / BUILD_INFO).read_text())["heldout_perplexity"]
    assert value == pytest.approx(recorded, rel=1e-3)
    assert value < unigram / 3, (value, unigram)


def test_a_second_build_is_a_cache_hit(quick_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info_before = (quick_model / BUILD_INFO).stat().st_mtime_ns

    def no_training(*_args: object) -> None:
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(tiny_llama, "_build_into", no_training)
    started = time.perf_counter()
    again = build_tiny_llama("quick", cache_dir=quick_model.parents[1], progress=False)
    assert again == quick_model
    assert time.perf_counter() - started < 30
    assert (quick_model / BUILD_INFO).stat().st_mtime_ns == info_before
