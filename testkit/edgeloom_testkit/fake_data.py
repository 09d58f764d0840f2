"""Tiny on-disk datasets in real formats, for tests that exercise the file loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar10_folder(
    root: str | Path, per_batch: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write a CIFAR-10 python folder (``root/cifar-10-batches-py``) of random images.

    Each of the five training batches and the test batch holds ``per_batch`` images whose labels
    cycle through the ten classes; files are pickled with protocol 2 like the official ones.

    Returns
    -------
    test_images, test_labels : np.ndarray
        The raw uint8 test images ``(per_batch, 3072)`` and labels written to ``test_batch``.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", per_batch, rng)
    return _write_cifar_batch(folder / "test_batch", per_batch, rng)


def _write_cifar_batch(
    path: Path, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = rng.permutation(np.arange(count) % 10)
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": [int(v) for v in labels],
        b"data": images,
        b"filenames": [f"{path.name}_{i}.png".encode() for i in range(count)],
    }
    with path.open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    return images, labels


def write_imagefolder(
    root: str | Path, classes: dict[str, int], size: tuple[int, int] = (12, 9), seed: int = 0
) -> None:
    """Write ``root/<class>/<i>.png`` images (needs Pillow); class ``k`` has mean colour ``20 k``.

    Parameters
    ----------
    root : str or Path
        Folder to create.
    classes : dict of str to int
        Number of images per class name.
    size : tuple of int
        Image width and height, deliberately not 32x32 so resizing is exercised.
    seed : int
        Seed of the pixel noise.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, (name, count) in enumerate(sorted(classes.items())):
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.clip(20 * k + rng.integers(0, 8, size=(size[1], size[0], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(Path(root) / name / f"{i}.png")
