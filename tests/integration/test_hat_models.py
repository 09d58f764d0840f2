"""HAT on the real models: the prepared adapter, and speculative decoding that gives the full
model's greedy output token for token (the tiny Llama edgeloom trains, the real SmolLM2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec, load_adapter
from edgeloom.algos.hat.distill import DistillSettings, draft_quality
from edgeloom.algos.hat.speculative import (
    DeviceSession,
    GammaPolicy,
    MiddleSession,
    Sampling,
    generate,
)
from edgeloom.algos.hat.split import HatParts, HatSplit
from edgeloom.apps.hat.prepare import chat_turns, prepare_adapter, training_blocks
from edgeloom.models.cache import BUILD_INFO
from edgeloom.models.llm import load_model
from edgeloom_testkit.tiny_llms import greedy_tokens

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SETTINGS = DistillSettings(steps=40, batch_size=8, learning_rate=1e-3)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_llama_quick: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    return prepare_adapter(
        tiny_llama_quick, HatSplit(1, 1), AdapterSpec("decoder"), SETTINGS, cache
    )


def test_the_prepared_adapter_drafts_closer_to_the_full_model_on_held_out_text(
    tiny_llama_quick: Path, tiny_adapter: Path
) -> None:
    info = json.loads((tiny_adapter / BUILD_INFO).read_text())
    before, after = info["heldout_before"], info["heldout_after"]
    assert after["kl"] < before["kl"]
    assert after["agreement"] > before["agreement"]
    assert info["distill"]["steps"] == SETTINGS.steps
    # the reloaded adapter is the one that was measured
    model, tokenizer = load_model(tiny_llama_quick)
    parts, adapter = load_adapter(model, tiny_adapter)
    heldout = training_blocks(tokenizer, "heldout", 16)
    assert draft_quality(parts, adapter, heldout).agreement == pytest.approx(after["agreement"])


def test_a_second_prepare_is_a_cache_hit(tiny_llama_quick: Path, tiny_adapter: Path) -> None:
    started = time.perf_counter()
    again = prepare_adapter(
        tiny_llama_quick,
        HatSplit(1, 1),
        AdapterSpec("decoder"),
        SETTINGS,
        tiny_adapter.parent.parent,
    )
    assert again == tiny_adapter
    assert time.perf_counter() - started < 30  # no retraining (a retrain takes minutes on 2 cores)


def test_speculation_on_the_tiny_llama_is_its_greedy_output_and_accepts_most_drafts(
    tiny_llama_quick: Path, tiny_adapter: Path
) -> None:
    model, tokenizer = load_model(tiny_llama_quick)
    parts, adapter = load_adapter(model, tiny_adapter)
    prompts = [tokenizer.decode(block[:48]) for block in training_blocks(tokenizer, "heldout", 3)]
    rates = []
    for text in prompts:
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        device = DeviceSession(parts, adapter, Sampling())
        result = generate(device, MiddleSession(parts), prompt, 40, GammaPolicy(), chunk_size=16)
        assert result.tokens == greedy_tokens(model, prompt, 40)
        rates.append(result.acceptance_rate)
    assert sum(rates) / len(rates) > 0.5


def test_speculation_on_smollm2_answers_a_chat_question_as_the_full_model_does(
    smollm2: Path,
) -> None:
    model, tokenizer = load_model(smollm2)
    parts = HatParts(model, HatSplit(2, 2))
    adapter = Adapter(parts, AdapterSpec("mlp")).eval()  # untrained: the middle skipped
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text)["input_ids"]
    device = DeviceSession(parts, adapter, Sampling())
    eos = [tokenizer.eos_token_id]
    result = generate(device, MiddleSession(parts), prompt, 24, GammaPolicy(), eos_token_ids=eos)
    reference = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)
    assert result.tokens == reference[0, len(prompt) :].tolist()
    assert "Paris" in tokenizer.decode(result.tokens, skip_special_tokens=True)


def test_chat_turns_use_the_models_template(smollm2: Path) -> None:
    _, tokenizer = load_model(smollm2)
    [turn] = chat_turns(tokenizer, ["What does this module do?\n\nIt parses the arguments."])
    assert turn.count("<|im_start|>") >= 2
    assert "<|im_start|>user\nWhat does this module do?" in turn
    assert "<|im_start|>assistant\nIt parses the arguments." in turn
