"""Feature merging and gradient splitting against full-model autograd.

Notation: worker i sends b_i features, the server's loss is the mean over the merged batch
L = (1/Σb) Σ_n l_n, and worker i receives g_i = (Σb / b_i) ∂L/∂f_i. Then

* with a top model that treats samples independently, g_i = ∂L_i/∂f_i with
  L_i = (1/b_i) Σ_{n∈i} l_n, so worker i's bottom gradient is that of the full model on the
  concatenated batch with per-sample loss weights 1/b_i on its own rows and 0 elsewhere;
* with any top model, Σ_i (b_i/Σb) (worker i's bottom gradient) is the full model's bottom
  gradient of L, so one SGD step per worker followed by b-weighted averaging is one
  centralised SGD step on the merged batch.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgeloom.algos.mergesfl import aggregate_bottom_models, merge_features, split_gradients
from edgeloom.models import build_model, split_model

BATCHES = (3, 5, 8)
CLASSES = 4


def _split_digits_cnn() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return split_model(build_model("digits-cnn", CLASSES, (1, 8, 8)).double(), 2)


def _batchnorm_top() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(512, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, CLASSES)
    ).double()


def _worker_batches() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    xs = [torch.rand(b, 1, 8, 8, generator=generator, dtype=torch.float64) for b in BATCHES]
    ys = [torch.randint(0, CLASSES, (b,), generator=generator) for b in BATCHES]
    return xs, ys


def _mergesfl_iteration(
    bottom: nn.Module, top: nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor]
) -> list[nn.Module]:
    """One iteration as the server and workers run it; returns the workers' bottom copies."""
    bottoms = [copy.deepcopy(bottom) for _ in xs]
    features = [b(x) for b, x in zip(bottoms, xs, strict=True)]
    merged, labels, slices = merge_features(features, ys)
    F.cross_entropy(top(merged), labels).backward()
    grads = split_gradients(merged.grad, slices, [len(x) for x in xs])
    for f, g in zip(features, grads, strict=True):
        f.backward(g)
    return bottoms


def _weighted_full_model_grads(
    bottom: nn.Module,
    top: nn.Module,
    weights: torch.Tensor,
    xs: list[torch.Tensor],
    ys: list[torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    full = nn.Sequential(copy.deepcopy(bottom), copy.deepcopy(top))
    losses = F.cross_entropy(full(torch.cat(xs)), torch.cat(ys), reduction="none")
    (losses * weights).sum().backward()
    return (
        {n: p.grad for n, p in full[0].named_parameters()},
        {n: p.grad for n, p in full[1].named_parameters()},
    )


def test_merge_features_concatenates_into_a_leaf_that_collects_gradients() -> None:
    features = [torch.randn(b, 2, 3, requires_grad=True) for b in BATCHES]
    labels = [torch.full((b,), i) for i, b in enumerate(BATCHES)]
    merged, merged_labels, slices = merge_features(features, labels)
    assert merged.is_leaf and merged.requires_grad and merged.shape == (16, 2, 3)
    assert slices == [slice(0, 3), slice(3, 8), slice(8, 16)]
    for f, y, s in zip(features, labels, slices, strict=True):
        torch.testing.assert_close(merged[s], f.detach())
        torch.testing.assert_close(merged_labels[s], y)
    merged.sum().backward()
    assert all(f.grad is None for f in features), "merging must cut the workers' graphs"


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        ([torch.zeros(2, 3), torch.zeros(2, 4)], [torch.zeros(2), torch.zeros(2)], "shape"),
        ([torch.zeros(2, 3)], [torch.zeros(3)], "expected 2 labels"),
        ([torch.zeros(0, 3)], [torch.zeros(0)], "non-empty"),
        ([torch.zeros(2, 3, dtype=torch.int64)], [torch.zeros(2)], "floating"),
        ([torch.zeros(2, 3)], [], "one label tensor"),
    ],
)
def test_merge_features_rejects_bad_batches(
    features: list[torch.Tensor], labels: list[torch.Tensor], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        merge_features(features, labels)


def test_split_gradients_checks_slices_against_batch_sizes() -> None:
    with pytest.raises(ValueError, match="must match"):
        split_gradients(torch.zeros(8, 2), [slice(0, 3), slice(3, 8)], [4, 4])


def test_each_worker_gets_the_gradient_of_its_own_mean_loss() -> None:
    _, top = _split_digits_cnn()
    generator = torch.Generator().manual_seed(3)
    features = [torch.randn(b, 32, 4, 4, generator=generator, dtype=torch.float64) for b in BATCHES]
    labels = [torch.randint(0, CLASSES, (b,), generator=generator) for b in BATCHES]
    merged, merged_labels, slices = merge_features(features, labels)
    F.cross_entropy(top(merged), merged_labels).backward()
    grads = split_gradients(merged.grad, slices, list(BATCHES))
    for f, y, g in zip(features, labels, grads, strict=True):
        own = f.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(F.cross_entropy(top(own), y), own)
        torch.testing.assert_close(g, expected)


def test_one_iteration_equals_full_model_with_per_worker_loss_weights() -> None:
    bottom, top = _split_digits_cnn()
    xs, ys = _worker_batches()
    reference_top = copy.deepcopy(top)
    bottoms = _mergesfl_iteration(bottom, top, xs, ys)
    for i, worker_bottom in enumerate(bottoms):
        weights = torch.cat(
            [
                torch.full((b,), 1.0 / b if j == i else 0.0, dtype=torch.float64)
                for j, b in enumerate(BATCHES)
            ]
        )
        expected, _ = _weighted_full_model_grads(bottom, reference_top, weights, xs, ys)
        for name, param in worker_bottom.named_parameters():
            torch.testing.assert_close(param.grad, expected[name])
    mean_weights = torch.full((sum(BATCHES),), 1.0 / sum(BATCHES), dtype=torch.float64)
    _, expected_top = _weighted_full_model_grads(bottom, reference_top, mean_weights, xs, ys)
    for name, param in top.named_parameters():
        torch.testing.assert_close(param.grad, expected_top[name])


@pytest.mark.parametrize("top_kind", ["per-sample", "batchnorm"])
def test_sgd_step_then_batch_weighted_aggregation_is_a_centralised_step(top_kind: str) -> None:
    bottom, top = _split_digits_cnn()
    if top_kind == "batchnorm":
        top = _batchnorm_top()
    xs, ys = _worker_batches()
    full = nn.Sequential(copy.deepcopy(bottom), copy.deepcopy(top))
    F.cross_entropy(full(torch.cat(xs)), torch.cat(ys)).backward()
    torch.optim.SGD(full.parameters(), lr=0.5).step()

    bottoms = _mergesfl_iteration(bottom, top, xs, ys)
    for worker_bottom in bottoms:
        torch.optim.SGD(worker_bottom.parameters(), lr=0.5).step()
    merged = aggregate_bottom_models([b.state_dict() for b in bottoms], list(BATCHES))
    for name, value in full[0].state_dict().items():
        torch.testing.assert_close(merged[name], value)
    assert not torch.allclose(merged["0.0.weight"], bottom.state_dict()["0.0.weight"])


def test_batchnorm_top_couples_workers_so_gradients_are_not_their_own_loss() -> None:
    bottom, _ = _split_digits_cnn()
    top = _batchnorm_top()
    xs, ys = _worker_batches()
    bottoms = _mergesfl_iteration(bottom, top, xs, ys)
    own = copy.deepcopy(bottom)
    F.cross_entropy(top(own(xs[0])), ys[0]).backward()
    assert not torch.allclose(bottoms[0][0][0].weight.grad, own[0][0].weight.grad)
