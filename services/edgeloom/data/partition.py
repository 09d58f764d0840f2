"""Split a training set over workers: IID, Dirichlet label skew and dominant-class label skew.

All partitioners are pure: labels and a seeded ``np.random.Generator`` in, a list of sorted,
disjoint int64 index arrays (one per worker) out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DIRICHLET_MAX_ATTEMPTS = 1000


def iid_partition(
    labels: npt.ArrayLike, num_workers: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle all samples and deal them into ``num_workers`` near-equal shards.

    Parameters
    ----------
    labels : array_like
        Integer labels, shape ``(N,)``; only their number matters.
    num_workers : int
        Number of shards, ``1 <= num_workers <= N``.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        Shard sizes differ by at most one; together they cover every sample once.
    """
    y = _as_labels(labels)
    _check_workers(num_workers, len(y))
    return [np.sort(s) for s in np.array_split(rng.permutation(len(y)), num_workers)]


def dirichlet_partition(
    labels: npt.ArrayLike,
    num_workers: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Per-class Dirichlet label skew, as in NIID-Bench (Li et al., ICDE 2022).

    For every class, proportions ``p ~ Dir(alpha * 1)`` over workers split that class's
    shuffled samples; workers that already hold more than ``N / num_workers`` samples get no
    more (the NIID-Bench balancing step). The whole draw is repeated until every worker holds at
    least ``min_size`` samples. Smaller ``alpha`` means stronger skew.

    Parameters
    ----------
    labels : array_like
        Integer labels, shape ``(N,)``.
    num_workers : int
        Number of shards.
    alpha : float
        Dirichlet concentration, positive.
    rng : np.random.Generator
        Source of randomness.
    min_size : int
        Smallest acceptable shard, ``min_size * num_workers <= N``.

    Returns
    -------
    list of np.ndarray
        Disjoint shards covering every sample.

    Raises
    ------
    ValueError
        On invalid arguments, or if no draw satisfies ``min_size`` within
        :data:`DIRICHLET_MAX_ATTEMPTS` attempts.
    """
    y = _as_labels(labels)
    _check_workers(num_workers, len(y))
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if min_size < 0 or min_size * num_workers > len(y):
        raise ValueError(f"cannot give {num_workers} workers {min_size} of {len(y)} samples each")
    classes = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
    for _ in range(DIRICHLET_MAX_ATTEMPTS):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
        sizes = np.zeros(num_workers, dtype=np.int64)
        for members in classes:
            share = rng.dirichlet(np.full(num_workers, alpha)) * (sizes < len(y) / num_workers)
            if share.sum() <= 0:  # every eligible share underflowed: split evenly among them
                share = (sizes < len(y) / num_workers).astype(float)
            cuts = (np.cumsum(share / share.sum()) * len(members)).astype(np.int64)[:-1]
            for worker, part in enumerate(np.split(rng.permutation(members), cuts)):
                shards[worker].append(part)
                sizes[worker] += len(part)
        if sizes.min() >= min_size:
            return [np.sort(np.concatenate(s)).astype(np.int64) for s in shards]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw gave every one of {num_workers} workers "
        f"{min_size} samples in {DIRICHLET_MAX_ATTEMPTS} attempts; lower min_size or raise alpha"
    )


def dominant_class_partition(
    labels: npt.ArrayLike, num_workers: int, dominant_ratio: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """MergeSFL's label skew: each worker is dominated by one class.

    Every worker gets ``n = N // num_workers`` samples: ``round(dominant_ratio * n)`` from its
    dominant class ``i % C`` and the rest in equal shares from the other ``C - 1`` classes
    (remainders rotate over the classes so that each class is asked equally often). No sample
    is used twice. Where a class cannot
    supply every request, the dominant share is served first (split evenly between the workers
    that share that dominant class), other requests are cut in proportion, and each worker's
    shortfall is filled at random from what is left, other classes before its dominant one.
    With balanced classes and ``C`` dividing ``num_workers`` every request is served exactly,
    up to rounding.

    Parameters
    ----------
    labels : array_like
        Integer labels, shape ``(N,)``, at least two classes.
    num_workers : int
        Number of shards.
    dominant_ratio : float
        Fraction of each shard from its dominant class, in ``[0, 1]`` (the paper uses 0.2-0.8).
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        Disjoint shards of ``n`` samples each (fewer only if the data run out).
    """
    y = _as_labels(labels)
    _check_workers(num_workers, len(y))
    num_classes = int(y.max()) + 1
    if num_classes < 2:
        raise ValueError("dominant-class partitioning needs at least two classes")
    if not 0.0 <= dominant_ratio <= 1.0:
        raise ValueError(f"dominant_ratio must be in [0, 1], got {dominant_ratio}")
    size = len(y) // num_workers
    dominant = np.arange(num_workers) % num_classes
    order = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    free = np.ones(len(y), dtype=bool)
    shards: list[list[np.ndarray]] = [[] for _ in range(num_workers)]

    def take(worker: int, cls: int, count: int) -> None:
        candidates = order[cls][free[order[cls]]][:count]
        free[candidates] = False
        shards[worker].append(candidates)

    for cls in range(num_classes):
        owners = np.flatnonzero(dominant == cls)
        if len(owners):
            each = min(round(dominant_ratio * size), len(order[cls]) // len(owners))
            for owner in owners:
                take(int(owner), cls, each)
    quota = _other_class_quota(shards, dominant, size, num_classes)
    supply = np.array([free[o].sum() for o in order])
    demand = quota.sum(axis=0)
    short = demand > supply
    quota[:, short] = np.floor(quota[:, short] * supply[short] / demand[short]).astype(np.int64)
    for worker in range(num_workers):
        for other in np.flatnonzero(quota[worker]):
            take(worker, int(other), int(quota[worker, other]))
    for worker in range(num_workers):
        missing = size - sum(len(s) for s in shards[worker])
        others = np.flatnonzero(free & (y != dominant[worker]))
        own = np.flatnonzero(free & (y == dominant[worker]))
        pool = np.concatenate([rng.permutation(others), rng.permutation(own)])[:missing]
        free[pool] = False
        shards[worker].append(pool)
    return [np.sort(np.concatenate(s)).astype(np.int64) for s in shards]


def _other_class_quota(
    shards: list[list[np.ndarray]], dominant: np.ndarray, size: int, num_classes: int
) -> np.ndarray:
    """Per worker and class, the number of non-dominant samples to request (equal shares).

    Worker ``i`` lists its other classes starting after its dominant class and gives the
    ``extra`` remainder samples to consecutive entries from offset ``(i // C) * extra``: within
    each run of ``C`` workers every class then receives the same number of remainders.
    """
    quota = np.zeros((len(shards), num_classes), dtype=np.int64)
    for worker, parts in enumerate(shards):
        others = (dominant[worker] + 1 + np.arange(num_classes - 1)) % num_classes
        base, extra = divmod(size - sum(len(p) for p in parts), num_classes - 1)
        quota[worker, others] = base
        start = (worker // num_classes) * extra
        quota[worker, others[(start + np.arange(extra)) % (num_classes - 1)]] += 1
    return quota


def label_distribution(
    labels: npt.ArrayLike, indices: npt.ArrayLike, num_classes: int
) -> np.ndarray:
    """Class frequencies of ``labels[indices]``.

    Parameters
    ----------
    labels : array_like
        Integer labels of the whole dataset.
    indices : array_like
        Indices of the subset (for example one worker's shard).
    num_classes : int
        Length of the result.

    Returns
    -------
    np.ndarray
        float64 probabilities of shape ``(num_classes,)`` summing to 1, or all zeros for an
        empty subset.
    """
    counts = np.bincount(
        _as_labels(labels)[np.asarray(indices, dtype=np.int64)], minlength=num_classes
    )
    if len(counts) > num_classes:
        raise ValueError(f"labels reach {len(counts) - 1}, beyond num_classes={num_classes}")
    total = counts.sum()
    return counts / total if total else np.zeros(num_classes)


def _as_labels(labels: npt.ArrayLike) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) == 0 or y.min() < 0:
        raise ValueError("labels must be a non-empty 1-D array of non-negative integers")
    return y.astype(np.int64, copy=False)


def _check_workers(num_workers: int, num_samples: int) -> None:
    if not 1 <= num_workers <= num_samples:
        raise ValueError(f"num_workers must be in [1, {num_samples}], got {num_workers}")
