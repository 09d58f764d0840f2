"""Tiny Llama pieces: tokenizer, token blocks, perplexity, presets and the build cache."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from edgeloom.models import tiny_llama
from edgeloom.models.tiny_llama import (
    BUILD_INFO,
    PRESETS,
    build_tiny_llama,
    perplexity,
    token_blocks,
    train_tokenizer,
)

TEXTS = [
    "def add(a, b):\n    return a + b  # sum , not product .\n",
    'class Point:\n    """A point."""\n\n    def __init__(self, x, y):\n        self.x = x\n',
    "for index in range(10):\n    print(index, 'é', \"✓\")\n",
] * 4


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(TEXTS, vocab_size=320)


def test_tokenizer_round_trips_text_without_adding_special_tokens(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    text = "def unseen(x):\n\treturn {'ключ': x}  # ✓ , .\n"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert len(specials | {tokenizer.unk_token_id}) == 4
    assert not specials & set(ids)
    assert len(tokenizer) <= 320


def test_tokenizer_reloads_offline_from_its_folder(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token, reloaded.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )


def test_token_blocks_put_eos_between_documents_and_drop_the_tail(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    docs = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    eos = tokenizer.eos_token_id
    stream = [token for doc in docs for token in [*doc, eos]][:-1]
    blocks = token_blocks(tokenizer, TEXTS, seq_len=16)
    assert blocks.dtype == torch.long
    assert blocks.shape == (len(stream) // 16, 16)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    assert (blocks == eos).sum() == stream[: blocks.numel()].count(eos) > 0
    assert torch.equal(token_blocks(tokenizer, TEXTS, seq_len=16), blocks)
    assert torch.equal(token_blocks(tokenizer, TEXTS, seq_len=16, max_blocks=3), blocks[:3])
    assert token_blocks(tokenizer, TEXTS[:1], seq_len=10_000).shape == (0, 10_000)


def test_token_blocks_reject_a_non_positive_length(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="seq_len"):
        token_blocks(tokenizer, TEXTS, seq_len=0)


def _random_llama(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    return LlamaForCausalLM(config).eval()


def test_perplexity_of_an_untrained_model_is_about_the_vocabulary_size() -> None:
    model = _random_llama(vocab_size=256)
    blocks = torch.randint(0, 256, (10, 16), generator=torch.Generator().manual_seed(0))
    value = perplexity(model, blocks, batch_size=4)
    assert 256 / 1.5 < value < 256 * 1.5
    with torch.inference_mode():
        mean_loss = model(input_ids=blocks, labels=blocks).loss.item()
    assert value == pytest.approx(math.exp(mean_loss), rel=1e-4)
    assert perplexity(model, blocks, batch_size=3) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("shape", [(0, 16), (4, 1), (16,)])
def test_perplexity_rejects_blocks_without_predictions(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="block tensor"):
        perplexity(_random_llama(vocab_size=8), torch.zeros(shape, dtype=torch.long))


def test_presets_are_valid_llama_shapes() -> None:
    standard = PRESETS["standard"]
    assert (standard.hidden_size, standard.num_layers, standard.num_heads) == (256, 8, 8)
    assert (standard.num_kv_heads, standard.intermediate_size) == (8, 688)
    assert (standard.vocab_size, standard.seq_len) == (4096, 128)
    for preset in PRESETS.values():
        assert preset.hidden_size % preset.num_heads == 0
        assert preset.num_heads % preset.num_kv_heads == 0
        assert 0 < preset.warmup_steps < preset.steps


@pytest.fixture
def fake_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip walking the stdlib: the cache tests only need some corpus fingerprint."""
    monkeypatch.setattr(tiny_llama, "corpus_fingerprint", lambda: "corpus-v1")


def _fake_build(calls: list[Path], delay: float = 0.0) -> Callable[..., None]:
    """A stand-in for the training step that records the staging folders it fills."""

    def build(folder: Path, preset: str, *_args: object) -> None:
        calls.append(folder)
        time.sleep(delay)
        (folder / "config.json").write_text("{}")
        (folder / BUILD_INFO).write_text(json.dumps({"preset": preset}))

    return build


@pytest.mark.usefixtures("fake_corpus")
def test_build_is_cached_under_a_keyed_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(tiny_llama, "_build_into", _fake_build(calls))
    folder = build_tiny_llama("quick", cache_dir=tmp_path, progress=False)
    assert folder.parent == tmp_path / "models"
    assert folder.name.startswith("tiny-llama-quick-") and len(folder.name) == 29
    assert json.loads((folder / BUILD_INFO).read_text()) == {"preset": "quick"}
    assert build_tiny_llama("quick", cache_dir=tmp_path, progress=False) == folder
    assert len(calls) == 1 and calls[0] != folder
    other = build_tiny_llama("standard", cache_dir=tmp_path, progress=False)
    assert other != folder and len(calls) == 2
    folders = {p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")}
    assert folders == {folder.name, other.name}
    monkeypatch.setattr(tiny_llama, "corpus_fingerprint", lambda: "corpus-v2")
    assert build_tiny_llama("quick", cache_dir=tmp_path, progress=False) != folder
    assert len(calls) == 3


@pytest.mark.usefixtures("fake_corpus")
def test_build_defaults_to_the_edgeloom_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiny_llama, "_build_into", _fake_build([]))
    monkeypatch.setenv("EDGELOOM_CACHE", str(tmp_path))
    assert build_tiny_llama("quick", progress=False).parent == tmp_path / "models"


@pytest.mark.usefixtures("fake_corpus")
def test_concurrent_builders_train_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(tiny_llama, "_build_into", _fake_build(calls, delay=0.3))
    results: list[Path] = []

    def build() -> None:
        results.append(build_tiny_llama("quick", cache_dir=tmp_path, progress=False))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and len(results) == 3


@pytest.mark.usefixtures("fake_corpus")
def test_a_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(folder: Path, *_args: object) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tiny_llama, "_build_into", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_tiny_llama("quick", cache_dir=tmp_path, progress=False)
    assert all(p.name.endswith(".lock") for p in (tmp_path / "models").iterdir())


@pytest.mark.usefixtures("fake_corpus")
def test_leftovers_of_a_killed_build_are_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(tiny_llama, "_build_into", _fake_build(calls))
    folder = build_tiny_llama("quick", cache_dir=tmp_path, progress=False)
    (folder / BUILD_INFO).unlink()
    staging = folder.parent / f".{folder.name}.killed"
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    assert build_tiny_llama("quick", cache_dir=tmp_path, progress=False) == folder
    assert len(calls) == 2 and (folder / BUILD_INFO).is_file()
    assert not staging.exists()


def test_unknown_preset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_tiny_llama("huge", cache_dir=tmp_path)
