"""Weighted state-dict averaging and the baseline helpers built on the same maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeloom.algos.common import average_state_dicts
from edgeloom.algos.mergesfl import (
    aggregate_bottom_models,
    random_select,
    regulate_batch_sizes,
    uniform_batch_sizes,
)


def _bn_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model.train()
    for _ in range(seed + 1):
        model(torch.randn(8, 3))
    return model


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_weighted_average_preserves_dtype(dtype: torch.dtype) -> None:
    a = {"w": torch.tensor([1.0, 2.0], dtype=dtype)}
    b = {"w": torch.tensor([3.0, 6.0], dtype=dtype)}
    merged = aggregate_bottom_models([a, b], [1, 3])
    assert merged["w"].dtype == dtype
    torch.testing.assert_close(merged["w"], torch.tensor([2.5, 5.0], dtype=dtype))


def test_batchnorm_state_dicts_average_floats_and_copy_integer_buffers() -> None:
    models = [_bn_model(seed) for seed in range(3)]
    states = [m.state_dict() for m in models]
    merged = aggregate_bottom_models(states, [2, 1, 1])
    expected_mean = 0.5 * states[0]["1.running_mean"] + 0.25 * (
        states[1]["1.running_mean"] + states[2]["1.running_mean"]
    )
    torch.testing.assert_close(merged["1.running_mean"], expected_mean)
    assert merged["1.num_batches_tracked"].dtype == torch.int64
    assert merged["1.num_batches_tracked"].item() == 1
    target = _bn_model(9)
    target.load_state_dict(merged)
    torch.testing.assert_close(target.state_dict()["0.weight"], merged["0.weight"])


def test_result_does_not_alias_or_change_the_inputs() -> None:
    states = [_bn_model(seed).state_dict() for seed in range(2)]
    before = [{k: v.clone() for k, v in s.items()} for s in states]
    merged = aggregate_bottom_models(states, [1, 1])
    for value in merged.values():
        value.add_(1)
    for state, copy in zip(states, before, strict=True):
        assert all(torch.equal(state[k], copy[k]) for k in state)


@pytest.mark.parametrize(
    ("states", "weights", "message"),
    [
        ([{"w": torch.zeros(2)}], [1, 2], "one weight per state dict"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [1, -1], "non-negative"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}], [0, 0], "not all zero"),
        ([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], [1, 1], "different keys"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], [1, 1], "differs"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.float64)}], [1, 1], "differs"),
        ([], [], "one weight per state dict"),
    ],
)
def test_invalid_aggregation_inputs(
    states: list[dict[str, torch.Tensor]], weights: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate_bottom_models(states, weights)


def test_average_state_dicts_is_uniform_or_by_sample_count() -> None:
    states = [{"w": torch.tensor([0.0])}, {"w": torch.tensor([4.0])}]
    assert average_state_dicts(states)["w"].item() == 2.0
    assert average_state_dicts(states, [3, 1])["w"].item() == 1.0


def test_uniform_batch_sizes_is_regulation_with_equal_speeds() -> None:
    assert uniform_batch_sizes(10, 3, 1, 10) == [4, 3, 3]
    assert uniform_batch_sizes(10, 3, 1, 3) == [3, 3, 3]
    assert uniform_batch_sizes(320, 7, 4, 128) == regulate_batch_sizes(
        [0.5] * 7, [0.5] * 7, 320, 4, 128
    )


def test_random_select_is_seeded_sorted_and_distinct() -> None:
    chosen = random_select(10, 4, np.random.default_rng(0))
    assert chosen == sorted(set(chosen)) and len(chosen) == 4 and max(chosen) < 10
    assert chosen == random_select(10, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_selected"):
        random_select(3, 4, np.random.default_rng(0))
