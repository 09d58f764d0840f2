"""CIFAR-10 in the official "python version" format (folder ``cifar-10-batches-py``).

Trust assumption: the batch files are pickles by format, and unpickling can run code. They are
read with a restricted unpickler that resolves only the globals a pickled ``dict`` of a uint8
numpy array and a list of labels needs (numpy's array and dtype reconstruction, and
``_codecs.encode``, which Python 3 uses for bytes in protocol-2 pickles); any other global is
refused with :class:`pickle.UnpicklingError`, so a tampered file cannot import ``os`` or
``subprocess``. numpy's array reconstruction itself is the remaining surface: only point this
loader at a copy of the dataset that comes from a source you trust (the official tarball or
your own PVC), never at user-uploaded files.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeloom.data.pair import TensorPair

# numpy 2 moved the array-unpickling helper to numpy._core (numpy.core warns on import)
_NUMPY_MAJOR = int(np.__version__.split(".")[0])
_reconstruct = importlib.import_module(
    "numpy._core.multiarray" if _NUMPY_MAJOR >= 2 else "numpy.core.multiarray"
)._reconstruct

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
# Per-channel mean and std of the CIFAR-10 training images, as commonly used for normalisation.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} in a CIFAR batch file"
            ) from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file with the restricted unpickler and validate it.

    Parameters
    ----------
    path : Path
        A ``data_batch_*`` or ``test_batch`` file.

    Returns
    -------
    images, labels : np.ndarray
        uint8 images of shape ``(N, 3, 32, 32)`` and int64 labels of shape ``(N,)``.

    Raises
    ------
    pickle.UnpicklingError
        If the file references any global outside the allow-list.
    ValueError
        If the content is not a CIFAR-10 batch.
    """
    with path.open("rb") as handle:
        batch = _RestrictedUnpickler(handle, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch (no data/labels entries)")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    size = int(np.prod(IMAGE_SHAPE))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != size
    ):
        raise ValueError(f"{path}: data must be a uint8 array of shape (N, {size})")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected {len(data)} integer labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: labels outside [0, {NUM_CLASSES})")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def load_cifar10(path: str | Path) -> tuple[TensorPair, TensorPair]:
    """Official CIFAR-10 train (5 batches) and test split, normalised per channel.

    Parameters
    ----------
    path : str or Path
        The ``cifar-10-batches-py`` folder, or the folder that contains it.

    Returns
    -------
    train, test : TensorPair
        float32 images ``(N, 3, 32, 32)`` normalised with :data:`MEAN` and :data:`STD`.
    """
    root = Path(path)
    if (root / FOLDER).is_dir():
        root = root / FOLDER
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a CIFAR-10 python folder: missing {missing}")
    train = [read_batch(root / f) for f in TRAIN_FILES]
    return (
        _to_pair(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        _to_pair(*read_batch(root / TEST_FILE)),
    )


def _to_pair(images: np.ndarray, labels: np.ndarray) -> TensorPair:
    x = torch.from_numpy(images).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return TensorPair((x - mean) / std, torch.from_numpy(labels))
