"""Sentence-encoder helpers on hand-made tensors and a stub model (the real one is integration)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgeloom.models.sentence_encoder import (
    check_mean_pooling,
    embed,
    embedding_fidelity,
    retrieval_accuracy,
)


class StubEncoder(nn.Module):
    """A "transformer" whose hidden states are plain token embeddings."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(10, 4)

    def forward(self, input_ids: torch.Tensor, **_: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=self.embedding(input_ids))


def test_fidelity_of_identical_or_rescaled_embeddings_is_one() -> None:
    torch.manual_seed(0)
    reference = torch.randn(5, 8)
    assert embedding_fidelity(reference, reference) == pytest.approx(1.0)
    assert embedding_fidelity(reference, 3.0 * reference) == pytest.approx(1.0)


def test_fidelity_of_opposite_and_orthogonal_embeddings() -> None:
    eye = torch.eye(4)
    assert embedding_fidelity(eye, -eye) == pytest.approx(-1.0)
    assert embedding_fidelity(eye, eye.roll(1, dims=0)) == pytest.approx(0.0)
    assert embedding_fidelity(eye, torch.cat([eye[:2], -eye[2:]])) == pytest.approx(0.0)


def test_retrieval_accuracy_of_identical_embeddings_is_one() -> None:
    torch.manual_seed(0)
    queries = torch.randn(6, 8)
    assert retrieval_accuracy(queries, queries) == pytest.approx(1.0)
    assert retrieval_accuracy(torch.eye(6), 2.0 * torch.eye(6)) == pytest.approx(1.0)


def test_retrieval_accuracy_of_permuted_documents() -> None:
    eye = torch.eye(4)
    assert retrieval_accuracy(eye, eye.roll(1, dims=0)) == pytest.approx(0.0)
    swapped_first_two = eye[[1, 0, 2, 3]]
    assert retrieval_accuracy(eye, swapped_first_two) == pytest.approx(0.5)


def test_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        embedding_fidelity(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match="shape"):
        retrieval_accuracy(torch.ones(3), torch.ones(3))


def test_embed_mean_pools_real_tokens_normalises_and_keeps_order() -> None:
    model = StubEncoder()
    batch = {
        "input_ids": torch.tensor([[1, 2, 0, 0], [3, 4, 5, 6], [7, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]),
    }
    table = model.embedding.weight.detach()
    expected = F.normalize(
        torch.stack([table[[1, 2]].mean(0), table[[3, 4, 5, 6]].mean(0), table[7]]), dim=1
    )
    for batch_size in (1, 2, 64):
        embeddings = embed(model, batch, batch_size=batch_size)
        assert torch.allclose(embeddings, expected, atol=1e-6)
        assert not embeddings.is_inference()
    with pytest.raises(ValueError, match="batch_size"):
        embed(model, batch, batch_size=0)


def _pooling_folder(tmp_path: Path, **modes: bool) -> Path:
    (tmp_path / "1_Pooling").mkdir()
    settings = {
        "word_embedding_dimension": 4,
        **{f"pooling_mode_{m}": on for m, on in modes.items()},
    }
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(settings))
    return tmp_path


def test_mean_pooling_or_no_pooling_config_is_accepted(tmp_path: Path) -> None:
    check_mean_pooling(tmp_path)
    check_mean_pooling(_pooling_folder(tmp_path, mean_tokens=True, cls_token=False))


@pytest.mark.parametrize(
    "modes",
    [{"cls_token": True, "mean_tokens": False}, {"mean_tokens": True, "max_tokens": True}, {}],
)
def test_other_pooling_is_refused(tmp_path: Path, modes: dict[str, bool]) -> None:
    with pytest.raises(ValueError, match="mean pooling"):
        check_mean_pooling(_pooling_folder(tmp_path, **modes))
