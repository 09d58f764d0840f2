"""The real pretrained all-MiniLM-L6-v2, loaded offline, on held-out docstring retrieval.

Measured on CPython 3.11.7, 200 held-out pairs (chance is 0.005), top-1 retrieval accuracy:

==========  ==========  ==============================================
max tokens  pretrained  random init, same config (torch seeds 0-4)
==========  ==========  ==============================================
64          0.525       0.035-0.085 (seed 0: 0.075)
128         0.55        0.05-0.085 (seeds 0-2)
==========  ==========  ==============================================

The test uses 64 tokens to stay well under 30 s on two CPU cores. Accuracy is far from 1.0
because many held-out docstrings of one module describe closely related things.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from edgeloom.data.text_pairs import docstring_pairs
from edgeloom.models.llm import load_model
from edgeloom.models.sentence_encoder import (
    embed,
    encode_texts,
    minilm_path,
    retrieval_accuracy,
)

pytestmark = pytest.mark.integration

PAIRS = 200
MAX_LENGTH = 64
PRETRAINED_MIN_ACCURACY = 0.42
RANDOM_MAX_ACCURACY = 0.2

Encoder = tuple[PreTrainedModel, PreTrainedTokenizerBase]
Batches = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_model(minilm_path())


@pytest.fixture(scope="module")
def retrieval_batches(encoder: Encoder) -> Batches:
    _, tokenizer = encoder
    pairs = docstring_pairs("heldout", limit=PAIRS)
    assert len(pairs) == PAIRS
    queries = encode_texts(tokenizer, [query for query, _ in pairs], max_length=MAX_LENGTH)
    documents = encode_texts(tokenizer, [document for _, document in pairs], max_length=MAX_LENGTH)
    return queries, documents


def test_loads_the_pretrained_minilm(encoder: Encoder) -> None:
    model, _ = encoder
    assert type(model).__name__ == "BertModel"
    assert not model.training
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)


def test_encode_texts_pads_and_truncates(encoder: Encoder) -> None:
    _, tokenizer = encoder
    batch = encode_texts(tokenizer, ["short", "word " * 500], max_length=16)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(tensor.shape == (2, 16) for tensor in batch.values())
    assert batch["attention_mask"][0].sum() == 3  # [CLS] short [SEP]


def test_paraphrases_are_closer_than_unrelated_sentences(encoder: Encoder) -> None:
    model, tokenizer = encoder
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply on Monday.",
    ]
    embeddings = embed(model, encode_texts(tokenizer, texts))
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_matches_sentence_transformers(encoder: Encoder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model, tokenizer = encoder
    reference = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    reference.max_seq_length = 16
    texts = ["A man is eating food.", "word " * 40, "Return the sum of the values."]
    expected = reference.encode(texts, convert_to_tensor=True)
    assert torch.allclose(
        embed(model, encode_texts(tokenizer, texts, max_length=16)), expected, atol=1e-5
    )


def test_pretrained_retrieves_docstring_bodies_and_random_init_does_not(
    encoder: Encoder, retrieval_batches: Batches
) -> None:
    model, _ = encoder
    queries, documents = retrieval_batches
    pretrained = retrieval_accuracy(embed(model, queries), embed(model, documents))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_model = AutoModel.from_config(model.config).eval()
    random_init = retrieval_accuracy(embed(random_model, queries), embed(random_model, documents))
    assert pretrained >= PRETRAINED_MIN_ACCURACY, pretrained
    assert random_init <= RANDOM_MAX_ACCURACY, random_init
