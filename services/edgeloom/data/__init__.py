"""Dataset loaders (MNIST-1D, digits, CIFAR-10, image folders) and non-IID partitioners."""

from edgeloom.data.datasets import DATASETS, load_dataset
from edgeloom.data.pair import TensorPair
from edgeloom.data.partition import (
    dirichlet_partition,
    dominant_class_partition,
    iid_partition,
    label_distribution,
)

__all__ = [
    "DATASETS",
    "TensorPair",
    "dirichlet_partition",
    "dominant_class_partition",
    "iid_partition",
    "label_distribution",
    "load_dataset",
]
