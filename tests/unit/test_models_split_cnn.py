"""Block-structured CNNs and their bottom/top split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from edgeloom.api.kinds.splittraining import Architecture
from edgeloom.data import load_dataset
from edgeloom.models import (
    ARCHITECTURES,
    DEFAULT_SPLIT_POINT,
    build_model,
    output_shape,
    split_model,
)

# (architecture, input shape, blocks, feature shape at the default split) as documented.
CASES = [
    ("cnn1d", (1, 40), 5, (64, 10)),
    ("digits-cnn", (1, 8, 8), 4, (32, 4, 4)),
    ("cifar-alexnet", (3, 32, 32), 8, (256, 2, 2)),
]


def test_every_api_architecture_has_a_builder_and_a_default_split() -> None:
    assert {a.value for a in Architecture} == set(ARCHITECTURES) == set(DEFAULT_SPLIT_POINT)


@pytest.mark.parametrize(("arch", "in_shape", "blocks", "features"), CASES)
def test_default_split_matches_the_documented_shapes(
    arch: str, in_shape: tuple[int, ...], blocks: int, features: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 7, in_shape).eval()
    assert len(model) == blocks
    bottom, top = split_model(model, DEFAULT_SPLIT_POINT[arch])
    assert output_shape(bottom, in_shape) == features
    x = torch.randn(3, *in_shape)
    assert model(x).shape == (3, 7)
    torch.testing.assert_close(top(bottom(x)), model(x))


def test_split_parts_share_parameters_with_the_model() -> None:
    model = build_model("digits-cnn", 10, (1, 8, 8))
    bottom, top = split_model(model, 1)
    with torch.no_grad():
        next(bottom.parameters()).add_(1.0)
    assert next(bottom.parameters()) is next(model.parameters())
    assert len(list(bottom.parameters())) + len(list(top.parameters())) == len(
        list(model.parameters())
    )


@pytest.mark.parametrize("split_point", [0, 4, -1])
def test_bad_split_point_names_the_valid_range(split_point: int) -> None:
    model = build_model("digits-cnn", 10, (1, 8, 8))
    with pytest.raises(ValueError, match="between 1 and 3"):
        split_model(model, split_point)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return list(build_model("cnn1d", 10, (1, 40)).state_dict().values())

    first, again, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="rank 3"):
        build_model("digits-cnn", 10, (64,))
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn1d", 1, (1, 40))


def test_non_default_input_shape_sizes_the_classifier() -> None:
    model = build_model("cifar-alexnet", 5, (1, 64, 48))
    assert model(torch.randn(2, 1, 64, 48)).shape == (2, 5)


def test_digits_cnn_learns_digits() -> None:
    train, test = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("digits-cnn", 10, (1, 8, 8))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        for batch in np.array_split(rng.permutation(len(train)), 45):
            optimiser.zero_grad()
            F.cross_entropy(model(train.x[batch]), train.y[batch]).backward()
            optimiser.step()
    with torch.no_grad():
        accuracy = (model(test.x).argmax(1) == test.y).float().mean().item()
    assert accuracy > 0.9
