"""What server and workers derive identically from the spec: data, partition, model, profiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeloom.api.device import DeviceProfile
from edgeloom.api.kinds.splittraining import PartitionScheme, SplitTrainingJobSpec
from edgeloom.data.datasets import load_dataset
from edgeloom.data.pair import TensorPair
from edgeloom.data.partition import (
    dirichlet_partition,
    dominant_class_partition,
    iid_partition,
    label_distribution,
)
from edgeloom.models.split_cnn import DEFAULT_SPLIT_POINT, build_model, split_model


@dataclass(frozen=True)
class Problem:
    """The dataset split over workers."""

    train: TensorPair
    test: TensorPair
    partitions: list[np.ndarray]
    num_classes: int

    def worker_data(self, index: int) -> TensorPair:
        return self.train.subset(self.partitions[index])

    def label_counts(self, index: int) -> np.ndarray:
        dist = label_distribution(self.train.y.numpy(), self.partitions[index], self.num_classes)
        return np.rint(dist * len(self.partitions[index])).astype(np.int64)


def build_problem(spec: SplitTrainingJobSpec) -> Problem:
    """Load the dataset and partition it over ``spec.worker_count`` workers, seeded."""
    train, test = load_dataset(
        spec.dataset.name.value, spec.dataset.path, spec.dataset.samples, seed=spec.training.seed
    )
    num_classes = int(max(train.y.max(), test.y.max())) + 1
    rng = np.random.default_rng(spec.training.seed)
    labels = train.y.numpy()
    n, part = spec.worker_count, spec.partition
    if part.scheme is PartitionScheme.IID:
        partitions = iid_partition(labels, n, rng)
    elif part.scheme is PartitionScheme.DIRICHLET:
        # small datasets cannot give every worker the partitioner's default of 10 samples
        partitions = dirichlet_partition(
            labels, n, part.alpha, rng, min_size=min(10, len(labels) // (2 * n))
        )
    else:
        partitions = dominant_class_partition(labels, n, part.dominant_ratio, rng)
    return Problem(train, test, partitions, num_classes)


def build_models(
    spec: SplitTrainingJobSpec, problem: Problem
) -> tuple[nn.Sequential, nn.Sequential]:
    """(bottom, top), initialised from the job's seed so every role starts from the same weights."""
    torch.manual_seed(spec.training.seed)
    arch = spec.model.architecture.value
    model = build_model(arch, problem.num_classes, tuple(problem.train.x.shape[1:]))
    return split_model(model, spec.model.split_point or DEFAULT_SPLIT_POINT[arch])


def feature_shape(bottom: nn.Module, sample: torch.Tensor) -> torch.Size:
    """The trailing shape of ``bottom``'s features, from the first row of ``sample`` in eval
    mode without gradients, so nothing the model holds changes."""
    was_training = bottom.training
    bottom.eval()
    try:
        with torch.no_grad():
            shape: torch.Size = bottom(sample[:1]).shape[1:]
        return shape
    finally:
        bottom.train(was_training)


def worker_profiles(spec: SplitTrainingJobSpec) -> list[DeviceProfile]:
    """The device profile of each worker index, groups in spec order."""
    return [g.profile for g in spec.workers for _ in range(g.count)]


def worker_groups(spec: SplitTrainingJobSpec) -> list[str]:
    """The group name of each worker index."""
    return [g.name for g in spec.workers for _ in range(g.count)]


def learning_rate(spec: SplitTrainingJobSpec, round_: int) -> float:
    """``lr * decay^round``, never below the floor (the official code's schedule)."""
    t = spec.training
    return max(t.learning_rate * t.lr_decay**round_, t.lr_floor)
