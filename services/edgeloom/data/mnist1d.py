"""MNIST-1D, generated locally with the ``mnist1d`` package (never its download path).

The signals come from ``mnist1d.data.make_dataset`` with the package's default arguments and its
default generation seed (42), so a given sample count always yields the same signals; the
caller's seed only chooses the train/test split. Generating 5,000 signals takes a few seconds, so
the generated arrays are cached as ``.npz`` (no pickle) under ``$EDGELOOM_CACHE``
(default ``~/.cache/edgeloom``); an unwritable cache directory only disables caching.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CACHE_ENV = "EDGELOOM_CACHE"
DEFAULT_SAMPLES = 5000
SIGNAL_LENGTH = 40

_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Directory for cached generated data: ``$EDGELOOM_CACHE`` or ``~/.cache/edgeloom``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgeloom")


def mnist1d_arrays(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """All generated MNIST-1D signals and labels, from the cache or freshly generated.

    Parameters
    ----------
    samples : int
        Number of signals to generate; ``mnist1d`` rounds it down to a multiple of 10 and makes
        the classes exactly balanced.

    Returns
    -------
    x, y : np.ndarray
        float32 signals of shape ``(N, 40)`` (standardised by ``mnist1d``) and int64 labels.
    """
    path = cache_dir() / f"mnist1d-n{samples}-seed42.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            x, y = cached["x"], cached["y"]
        if x.shape == (len(y), SIGNAL_LENGTH):
            return x, y
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    x, y = _generate(samples)
    try:
        _write_atomically(path, x, y)
    except OSError as err:
        _log.warning("not caching MNIST-1D under %s: %s", path.parent, err)
    return x, y


def _write_atomically(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, x=x, y=y)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _generate(samples: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples
    # make_dataset reseeds the global numpy and random generators; leave them as we found them.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y
