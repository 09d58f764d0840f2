"""Fashion-MNIST read from Debian's dataset-fashion-mnist package (installed by make test-tools)."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeloom.data.fashion_mnist import CLASSES, DEBIAN_DIR, fashion_mnist_arrays, read_idx


def test_the_official_splits_load_with_balanced_classes() -> None:
    train_x, train_y = fashion_mnist_arrays("train")
    test_x, test_y = fashion_mnist_arrays("test")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert np.bincount(train_y).tolist() == [6000] * len(CLASSES)
    assert np.bincount(test_y).tolist() == [1000] * len(CLASSES)
    # real images: dark background, bright garments, no two splits sharing an image
    assert train_x[:, 0, 0].mean() < 5 and train_x.max() == 255
    assert train_x.mean() == pytest.approx(72.94, abs=0.05)  # the published mean, 0.2860 x 255
    assert not {im.tobytes() for im in test_x[:500]} & {im.tobytes() for im in train_x[:5000]}


def _write_idx(path: Path, magic: bytes, shape: tuple[int, ...], body: bytes) -> None:
    with gzip.open(path, "wb") as out:
        out.write(magic + struct.pack(f">{len(shape)}I", *shape) + body)


def test_a_foreign_or_truncated_idx_file_is_refused(tmp_path: Path) -> None:
    floats = tmp_path / "floats.gz"
    _write_idx(floats, b"\x00\x00\x0d\x01", (2,), b"\x00" * 8)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file of rank 1"):
        read_idx(floats, rank=1)
    short = tmp_path / "short.gz"
    _write_idx(short, b"\x00\x00\x08\x03", (2, 28, 28), b"\x00" * 100)
    with pytest.raises(ValueError, match="100 bytes of data for shape"):
        read_idx(short, rank=3)


def test_a_missing_file_names_the_package(tmp_path: Path) -> None:
    shutil.copy(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz.*dataset-fashion-mnist"
    ):
        fashion_mnist_arrays("test", tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        fashion_mnist_arrays("validation", tmp_path)


def test_load_dataset_keeps_the_official_ratio_and_standardises() -> None:
    from edgeloom.data import load_dataset

    train, test = load_dataset("fashion-mnist", samples=7000, seed=1)
    assert train.x.shape == (6000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert abs(float(train.x.mean())) < 0.05 and abs(float(train.x.std()) - 1) < 0.05
    again, _ = load_dataset("fashion-mnist", samples=7000, seed=1)
    assert torch.equal(train.x, again.x)  # the seed decides the subset
