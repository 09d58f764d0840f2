"""Offline text corpora: the running interpreter's standard library, split by file.

The Python standard library ships with every interpreter that runs edgeloom, so it is a real
corpus (code, comments and docstrings in English) that needs no download. Files are split
into train and held-out sets by a stable hash of their path relative to the stdlib root, so
the split is the same on every machine with the same Python version, and a file is never in
both sets.

:func:`load_text_corpus` reads a user's own corpus: a ``.txt`` file, a ``.jsonl`` file with a
``"text"`` field per line, or a directory of ``.txt``/``.md`` files.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

Split = Literal["train", "heldout"]

HELDOUT_BUCKETS = 20
"""One file in ``HELDOUT_BUCKETS`` (by path hash) is held out: about 5 % of the corpus."""

_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
_DIRECTORY_SUFFIXES = (".txt", ".md")


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


def read_texts(paths: Iterable[Path]) -> list[str]:
    """The UTF-8 text of each file, in order.

    Parameters
    ----------
    paths : Iterable[Path]
        Files to read.

    Returns
    -------
    list[str]
        One string per file.

    Raises
    ------
    ValueError
        If a file is not valid UTF-8 (the message names the file).
    """
    return [_read_utf8(Path(path)) for path in paths]


def load_text_corpus(path: str | Path) -> list[str]:
    """Documents of a user-supplied text corpus.

    Parameters
    ----------
    path : str or Path
        A ``.txt`` file (one document), a ``.jsonl`` file (one JSON object with a string
        ``"text"`` field per non-blank line, one document each), or a directory whose ``.txt``
        and ``.md`` files, searched recursively and sorted by relative path, are one document
        each.

    Returns
    -------
    list[str]
        The documents, in file (or line) order.

    Raises
    ------
    ValueError
        If the path does not exist, has an unsupported type, holds malformed JSON lines,
        is not UTF-8, or holds no text at all; the message names the offending path.
    """
    path = Path(path)
    if path.is_dir():
        texts = read_texts(_directory_documents(path))
    elif not path.is_file():
        raise ValueError(f"{path}: no such file or directory")
    elif path.suffix.lower() == ".txt":
        texts = [_read_utf8(path)]
    elif path.suffix.lower() == ".jsonl":
        texts = _jsonl_texts(path)
    else:
        raise ValueError(
            f"{path}: unsupported corpus; expected a .txt file, a .jsonl file "
            "or a directory of .txt/.md files"
        )
    if not any(text.strip() for text in texts):
        raise ValueError(f"{path}: the corpus holds no text")
    return texts


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not valid UTF-8 text ({err.reason} at byte {err.start})"
        ) from err


def _directory_documents(directory: Path) -> list[Path]:
    files = sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in _DIRECTORY_SUFFIXES and path.is_file()
    )
    if not files:
        raise ValueError(f"{directory}: no .txt or .md files in the directory")
    return files


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}:{number}: expected a JSON object with a string 'text' field")
        texts.append(record["text"])
    return texts
