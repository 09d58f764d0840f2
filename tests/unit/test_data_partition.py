"""Partitioners: every sample at most once, and the skew each scheme promises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgeloom.data import (
    dirichlet_partition,
    dominant_class_partition,
    iid_partition,
    label_distribution,
)

BALANCED = np.repeat(np.arange(10), 100)  # 10 classes x 100 samples


def _assert_disjoint(shards: list[np.ndarray], n: int, cover: bool) -> None:
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined), "a sample was used twice"
    assert joined.min() >= 0 and joined.max() < n
    if cover:
        assert len(joined) == n
    assert all(s.dtype == np.int64 and np.all(np.diff(s) > 0) for s in shards)


def _dominant_share(labels: np.ndarray, shards: list[np.ndarray]) -> np.ndarray:
    return np.array([label_distribution(labels, s, 10).max() for s in shards])


def test_iid_is_balanced_and_seeded() -> None:
    shards = iid_partition(BALANCED, 7, np.random.default_rng(0))
    _assert_disjoint(shards, 1000, cover=True)
    assert {len(s) for s in shards} == {142, 143}
    again = iid_partition(BALANCED, 7, np.random.default_rng(0))
    other = iid_partition(BALANCED, 7, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other, strict=True))
    assert _dominant_share(BALANCED, shards).max() < 0.25


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    skewed = dirichlet_partition(BALANCED, 10, 0.1, np.random.default_rng(0), min_size=10)
    mild = dirichlet_partition(BALANCED, 10, 1000.0, np.random.default_rng(0), min_size=10)
    for shards in (skewed, mild):
        _assert_disjoint(shards, 1000, cover=True)
        assert min(len(s) for s in shards) >= 10
    assert _dominant_share(BALANCED, skewed).mean() > 0.5
    assert _dominant_share(BALANCED, mild).mean() < 0.2


def test_dirichlet_rejects_impossible_min_size() -> None:
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet_partition(BALANCED, 10, 0.5, np.random.default_rng(0), min_size=101)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(BALANCED, 10, 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_dominant_class_exact_when_classes_divide_workers(ratio: float) -> None:
    shards = dominant_class_partition(BALANCED, 10, ratio, np.random.default_rng(0))
    _assert_disjoint(shards, 1000, cover=True)
    for worker, shard in enumerate(shards):
        counts = np.bincount(BALANCED[shard], minlength=10)
        assert len(shard) == 100
        assert counts[worker] == round(ratio * 100)
        others = np.delete(counts, worker)
        assert others.max() - others.min() <= 1, "the rest is not spread evenly"


def test_dominant_class_ratio_zero_excludes_the_dominant_class() -> None:
    shards = dominant_class_partition(BALANCED, 20, 0.0, np.random.default_rng(0))
    _assert_disjoint(shards, 1000, cover=True)
    assert all(label_distribution(BALANCED, s, 10)[w % 10] == 0 for w, s in enumerate(shards))


def test_dominant_class_with_shared_dominant_classes_stays_disjoint() -> None:
    shards = dominant_class_partition(BALANCED, 15, 0.8, np.random.default_rng(0))
    _assert_disjoint(shards, 1000, cover=False)
    assert [len(s) for s in shards] == [66] * 15
    shares = np.array([label_distribution(BALANCED, s, 10)[w % 10] for w, s in enumerate(shards)])
    assert shares.min() >= 0.7


def test_label_distribution() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(label_distribution(labels, [1, 3, 4], 4), [0, 1 / 3, 2 / 3, 0])
    np.testing.assert_array_equal(label_distribution(labels, [], 3), [0, 0, 0])
    with pytest.raises(ValueError, match="beyond num_classes"):
        label_distribution(labels, [5], 2)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=2, max_size=6).filter(lambda c: sum(c) >= 12),
    workers=st.integers(1, 12),
    ratio=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_partitions_never_reuse_a_sample(
    counts: list[int], workers: int, ratio: float, seed: int
) -> None:
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    assume(labels.max() >= 1)  # dominant-class partitioning needs two classes
    rng = np.random.default_rng(seed)
    _assert_disjoint(iid_partition(labels, workers, rng), len(labels), cover=True)
    _assert_disjoint(
        dirichlet_partition(labels, workers, 0.5, rng, min_size=0), len(labels), cover=True
    )
    shards = dominant_class_partition(labels, workers, ratio, rng)
    _assert_disjoint(shards, len(labels), cover=False)
    assert [len(s) for s in shards] == [len(labels) // workers] * workers
