"""Models edgeloom builds once and caches (the tiny Llama it trains, SmolLM2 converted from its
GGUF): each a ``from_pretrained`` folder ``<cache>/models/<name>``, where ``<cache>`` is
``cache_dir``, ``$EDGELOOM_CACHE`` or ``~/.cache/edgeloom`` and ``<name>`` carries a key of
everything the build depends on, so a cache hit never rebuilds.

A build writes into a temporary folder beside the target and renames it into place; a file
lock makes concurrent builders of the same model wait for one another and reuse its result;
the leftovers of a killed build are removed before the next one starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeloom.data.mnist1d import cache_dir as default_cache_dir

BUILD_INFO = "edgeloom_build.json"
"""File in a built model folder that records how it was built; written last, so its presence
means the folder is complete."""

_log = logging.getLogger(__name__)


def models_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache>/models``: ``cache_dir``, ``$EDGELOOM_CACHE`` or ``~/.cache/edgeloom``."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "models"


def cached_build(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build(staging_folder)`` unless it is built already.

    ``build`` fills an empty folder and writes :data:`BUILD_INFO` into it last; the folder is
    then renamed to ``target``. A failing build leaves nothing behind.
    """
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if is_built(target):
            _log.info("reusing %s, built concurrently", target)
            return target
        _remove_leftovers(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def is_built(folder: Path) -> bool:
    return (folder / BUILD_INFO).is_file()


def _remove_leftovers(target: Path) -> None:
    """Delete an incomplete ``target`` and staging folders of builders that were killed.

    Call it holding the target's lock, so that no live builder owns those folders.
    """
    for stale in [target, *target.parent.glob(f".{target.name}.*")]:
        if stale.is_dir():
            _log.info("removing incomplete build %s", stale)
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
