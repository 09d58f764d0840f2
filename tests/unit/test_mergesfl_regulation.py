"""Batch-size regulation: b_i proportional to 1/(μ_i + 2s/β_i), bounded, integer, summing to B."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloom.algos.mergesfl import predicted_iteration_times, regulate_batch_sizes


def test_sizes_are_exactly_proportional_to_speed() -> None:
    sizes = regulate_batch_sizes([1.0, 1.5, 3.0], [0.0, 0.5, 1.0], 7, 1, 7)
    assert sizes == [4, 2, 1]
    times = predicted_iteration_times(sizes, [1.0, 1.5, 3.0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(times, [4.0, 4.0, 4.0])


def test_iteration_times_equalise_within_one_sample() -> None:
    rng = np.random.default_rng(0)
    compute = rng.uniform(0.001, 0.02, size=12)
    transfer = rng.uniform(0.0, 0.01, size=12)
    sizes = regulate_batch_sizes(compute, transfer, 320, 1, 320)
    assert sum(sizes) == 320
    times = predicted_iteration_times(sizes, compute, transfer)
    assert times.max() - times.min() <= (compute + transfer).max()
    ideal = 320 / np.sum(1 / (compute + transfer))
    assert abs(times.max() - ideal) <= (compute + transfer).max()
    even = predicted_iteration_times(
        [320 // 12 + (i < 320 % 12) for i in range(12)], compute, transfer
    )
    assert times.max() < 0.8 * even.max()


def test_clipped_workers_keep_their_bound_and_the_rest_share_in_proportion() -> None:
    # per-sample times 2, 2, 5, 0.5 ms: the fastest worker would get 200 of 320 and is capped.
    sizes = regulate_batch_sizes([0.001, 0.002, 0.004, 0.0005], [0.001, 0, 0.001, 0], 320, 4, 128)
    assert sizes == [80, 80, 32, 128]


def test_slow_worker_is_raised_to_the_minimum() -> None:
    sizes = regulate_batch_sizes([1.0, 1.0, 1000.0], [0.0, 0.0, 0.0], 100, 10, 100)
    assert sizes == [45, 45, 10]


def test_infeasible_bounds_give_every_worker_the_violated_bound() -> None:
    assert regulate_batch_sizes([1.0, 2.0, 3.0], [0, 0, 0], 10, 4, 8) == [4, 4, 4]
    assert regulate_batch_sizes([1.0, 2.0, 3.0], [0, 0, 0], 100, 4, 8) == [8, 8, 8]


@pytest.mark.parametrize(
    ("compute", "transfer", "total", "low", "high", "message"),
    [
        ([1.0, 2.0], [0.0], 10, 1, 10, "equally long"),
        ([-1.0], [1.0], 10, 1, 10, "non-negative"),
        ([0.0], [0.0], 10, 1, 10, "positive per-sample time"),
        ([1.0], [float("nan")], 10, 1, 10, "finite"),
        ([1.0], [0.0], 10, 5, 4, "min_batch <= max_batch"),
        ([1.0], [0.0], 0, 1, 4, "total_batch >= 1"),
    ],
)
def test_invalid_inputs(
    compute: list[float], transfer: list[float], total: int, low: int, high: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        regulate_batch_sizes(compute, transfer, total, low, high)


@settings(max_examples=200, deadline=None)
@given(
    per_sample=st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=20),
    total=st.integers(1, 2000),
    low=st.integers(1, 50),
    span=st.integers(0, 300),
)
def test_bounds_sum_and_monotonic_in_speed(
    per_sample: list[float], total: int, low: int, span: int
) -> None:
    high = low + span
    sizes = regulate_batch_sizes(per_sample, [0.0] * len(per_sample), total, low, high)
    n = len(sizes)
    assert all(low <= b <= high for b in sizes)
    if n * low <= total <= n * high:
        assert sum(sizes) == total
    for i in range(n):
        for j in range(n):
            if per_sample[i] < per_sample[j]:
                assert sizes[i] >= sizes[j], "a faster worker got a smaller batch"
