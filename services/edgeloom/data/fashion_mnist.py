"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (the four IDX files, gzipped).

Zalando's 70,000 28x28 grey-scale images of ten clothing classes, in the official split of
60,000 training and 10,000 test images. The package puts the files under
:data:`DEBIAN_DIR`; any folder holding the same four files works. The IDX format is read
here (a magic number naming the element type and rank, big-endian sizes, then the raw bytes),
so nothing is unpickled and nothing downloads.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the files."""
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SIZE = 28
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UBYTE = 0x08


def fashion_mnist_arrays(
    split: str, folder: str | Path = DEBIAN_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one official split.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    folder : str or Path
        Folder with the four ``*-ubyte.gz`` files (default: Debian's).

    Returns
    -------
    images, labels : np.ndarray
        uint8 images of shape ``(N, 28, 28)`` and int64 labels in ``[0, 10)``.

    Raises
    ------
    FileNotFoundError
        When a file is missing (the message says which package provides them).
    ValueError
        When a file is not an unsigned-byte IDX file of the expected rank, or images and
        labels disagree.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images_name, labels_name = _FILES[split]
    root = Path(folder)
    for name in (images_name, labels_name):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {root / name} not found; install Debian's "
                "dataset-fashion-mnist package (make test-tools does) or give its folder"
            )
    images = read_idx(root / images_name, rank=3)
    labels = read_idx(root / labels_name, rank=1).astype(np.int64)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(images) != len(labels):
        raise ValueError(
            f"{root}: {images.shape} images do not match {labels.shape} labels of 28x28 images"
        )
    if labels.size and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASSES):
        raise ValueError(f"{root / labels_name}: labels outside [0, {len(CLASSES)})")
    return images, labels


def read_idx(path: Path, rank: int) -> np.ndarray:
    """An unsigned-byte IDX array of the given rank from a gzipped file.

    Raises
    ------
    ValueError
        On a wrong magic number, element type, rank or a size that does not match the data.
    """
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 + 4 * rank:
        raise ValueError(f"{path}: too short for an IDX header of rank {rank}")
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != _UBYTE or dims != rank:
        raise ValueError(
            f"{path}: not an unsigned-byte IDX file of rank {rank} (type 0x{kind:02x}, rank {dims})"
        )
    shape = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape).copy()  # writable, so torch can share it
