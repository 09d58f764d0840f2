"""Joint batch sizing: the divergence-minimising sizes within the regulated time bound."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloom.algos.mergesfl import (
    MergeSFLConfig,
    SelectionProblem,
    joint_batch_sizes,
    kl_divergence,
    merged_label_distribution,
    predicted_iteration_times,
    regulate_batch_sizes,
    score_selection,
)

UNIFORM4 = np.full(4, 0.25)


def _skewed() -> tuple[np.ndarray, list[float], list[float]]:
    """A fast worker holding only class 0 and three slow ones holding the others: regulation
    gives the fast one the biggest batch and so over-weights class 0."""
    labels = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0.1, 0.1, 0.1, 0.7]])
    return labels, [0.001, 0.004, 0.004, 0.004], [0.0, 0.0, 0.0, 0.0]


def test_joint_sizes_balance_the_mix_regulation_skews() -> None:
    labels, compute, transfer = _skewed()
    regulated = regulate_batch_sizes(compute, transfer, 64, 1, 64)
    before = kl_divergence(merged_label_distribution(regulated, labels), UNIFORM4)
    joint = joint_batch_sizes(labels, compute, transfer, UNIFORM4, 64, 1, 64, slack=1.0)
    assert joint.divergence < before / 5  # the regulated mix is far off; the joint one is close
    assert sum(joint.batch_sizes) == 64
    assert predicted_iteration_times(joint.batch_sizes, compute, transfer).max() <= (
        joint.time_bound_s + 1e-12
    )


def test_joint_sizes_are_the_integer_optimum_on_a_small_case() -> None:
    labels = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    compute, transfer = [0.01, 0.02, 0.04], [0.005, 0.0, 0.01]
    target = np.full(3, 1 / 3)
    joint = joint_batch_sizes(labels, compute, transfer, target, 24, 2, 16, slack=0.5)
    cost = np.add(compute, transfer)
    feasible = [
        sizes
        for sizes in itertools.product(range(2, 17), repeat=3)
        if sum(sizes) == 24 and (np.array(sizes) * cost).max() <= joint.time_bound_s + 1e-12
    ]
    best = min(kl_divergence(merged_label_distribution(s, labels), target) for s in feasible)
    assert joint.divergence == pytest.approx(best, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    workers=st.integers(1, 8),
    classes=st.integers(2, 6),
    slack=st.sampled_from([0.0, 0.2, 1.0]),
    bounds=st.sampled_from([(64, 1, 64), (100, 4, 32), (40, 8, 16), (12, 4, 8)]),
)
def test_never_worse_than_regulation_never_slower_than_the_bound(
    seed: int, workers: int, classes: int, slack: float, bounds: tuple[int, int, int]
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.dirichlet(np.full(classes, 0.3), size=workers) + 1e-3
    compute = rng.uniform(0.001, 0.02, size=workers)
    transfer = rng.uniform(0.0, 0.01, size=workers)
    target = np.full(classes, 1 / classes)
    total, low, high = bounds
    regulated = regulate_batch_sizes(compute, transfer, total, low, high)
    joint = joint_batch_sizes(labels, compute, transfer, target, total, low, high, slack)
    sizes = np.array(joint.batch_sizes)
    assert sizes.dtype.kind == "i" and sizes.sum() == sum(regulated)
    assert np.all(sizes >= min(low, min(regulated))) and np.all(sizes <= max(high, max(regulated)))
    regulated_time = predicted_iteration_times(regulated, compute, transfer).max()
    assert joint.time_bound_s == pytest.approx((1 + slack) * regulated_time)
    assert predicted_iteration_times(joint.batch_sizes, compute, transfer).max() <= (
        joint.time_bound_s * (1 + 1e-12)
    )
    before = kl_divergence(merged_label_distribution(regulated, labels), target)
    assert joint.divergence <= before + 1e-12


def test_more_slack_never_raises_the_divergence() -> None:
    labels, compute, transfer = _skewed()
    divergences = [
        joint_batch_sizes(labels, compute, transfer, UNIFORM4, 64, 1, 64, slack).divergence
        for slack in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(divergences))
    assert divergences[-1] < divergences[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slack": -0.1}, "slack"),
        ({"slack": float("inf")}, "slack"),
        ({"target": [0.5, 0.5, 0.0, 0.0]}, "positive for every class"),
        ({"target": [0.5, 0.5]}, "label distribution of 2 classes"),
    ],
)
def test_bad_inputs_are_refused_naming_the_argument(
    change: dict[str, object], message: str
) -> None:
    labels, compute, transfer = _skewed()
    args: dict[str, object] = {"target": UNIFORM4, "slack": 0.0, **change}
    with pytest.raises(ValueError, match=message):
        joint_batch_sizes(labels, compute, transfer, args["target"], 64, 1, 64, args["slack"])  # type: ignore[arg-type]


def test_selection_scores_a_set_with_joint_sizes() -> None:
    labels, compute, transfer = _skewed()
    scores = {}
    for control in ("regulation", "joint"):
        config = MergeSFLConfig(
            total_batch_size=64,
            min_batch_size=1,
            max_batch_size=64,
            batch_control=control,
            joint_slack=1.0,
        )
        problem = SelectionProblem.create(labels, compute, transfer, 4, config)
        scores[control] = score_selection(problem, [0, 1, 2, 3])
    assert scores["joint"].divergence < scores["regulation"].divergence / 5
    assert sum(scores["joint"].batch_sizes) == 64
    with pytest.raises(ValueError, match="batch_control"):
        MergeSFLConfig(batch_control="both")  # type: ignore[arg-type]
