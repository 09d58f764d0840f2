"""Offline text corpora: the running interpreter's standard library, split by file.

The Python standard library ships with every interpreter that runs edgeloom, so it is a real
corpus (code, comments and docstrings in English) that needs no download. Files are split
into train and held-out sets by a stable hash of their path relative to the stdlib root, so
the split is the same on every machine with the same Python version, and a file is never in
both sets.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import Literal

Split = Literal["train", "heldout"]

HELDOUT_BUCKETS = 20
"""One file in ``HELDOUT_BUCKETS`` (by path hash) is held out: about 5 % of the corpus."""

_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def stdlib_root() -> Path:
    """The directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(split: Split) -> list[Path]:
    """Standard-library ``.py`` files of one split, sorted by relative path.

    Test suites and installed third-party packages are excluded.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    root = stdlib_root()
    chosen = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if _EXCLUDED_DIRS.intersection(relative.parts):
            continue
        if (_bucket(relative.as_posix()) == 0) == (split == "heldout"):
            chosen.append(relative)
    return [root / relative for relative in sorted(chosen)]


def _bucket(relative_path: str) -> int:
    digest = hashlib.sha256(relative_path.encode()).digest()
    return int.from_bytes(digest[:4], "big") % HELDOUT_BUCKETS
