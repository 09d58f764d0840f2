"""Seeded train/test splits shared by the loaders."""

from __future__ import annotations

import numpy as np

from edgeloom.data.pair import TensorPair

TEST_FRACTION = 0.2


def balanced_test_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the same number of samples from every class.

    Each class gives ``floor(test_fraction * N / C)`` test samples, chosen at random; the rest
    is training data.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels, shape ``(N,)``, classes ``0 .. C-1``.
    test_fraction : float
        Target fraction of all samples in the test set, in ``(0, 1)``.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    train_indices, test_indices : np.ndarray
        Sorted, disjoint int64 index arrays covering all samples.

    Raises
    ------
    ValueError
        If a class has no sample left for training.
    """
    counts = np.bincount(labels)
    per_class = int(test_fraction * len(labels) / len(counts))
    if per_class < 1 or per_class >= counts.min():
        raise ValueError(
            f"cannot hold out {per_class} samples of every class from class counts {counts}"
        )
    test = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
            for c in range(len(counts))
        ]
    )
    return _complement(len(labels), test)


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(test_fraction * n_c)`` samples of each class ``c`` (at most ``n_c - 1``).

    Parameters and returns as :func:`balanced_test_split`; classes keep their proportions.
    """
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = min(round(test_fraction * len(members)), len(members) - 1)
        test.append(rng.choice(members, take, replace=False))
    return _complement(len(labels), np.concatenate(test))


def random_subset(pair: TensorPair, size: int, rng: np.random.Generator) -> TensorPair:
    """A uniformly random subset of ``min(size, len(pair))`` samples, in random order."""
    keep = rng.permutation(len(pair))[: min(size, len(pair))]
    return pair.subset(keep)


def _complement(n: int, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)
