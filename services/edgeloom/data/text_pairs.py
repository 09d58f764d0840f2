"""Real text pairs from the standard library's docstrings: a summary line and its body.

Every function, class and module docstring of the running interpreter's standard library (see
:mod:`edgeloom.data.textcorpus`) that has a summary sentence and a body gives one pair
``(query, document)``: the query is the docstring's first sentence, the document is the rest
of the docstring. Both are whitespace-normalised. The pairs are real English text written by
people, need no download, and make a retrieval task for sentence encoders: find the body that
belongs to a summary.

A pair is kept when its query has at least :data:`MIN_QUERY_WORDS` words and its document at
least :data:`MIN_DOCUMENT_WORDS` words. Within a split a pair is skipped when its query or its
document already occurred (the standard library repeats some docstrings); the first occurrence
wins. Pairs come in a deterministic order: files sorted by relative path, then docstrings in
source order.

Splits, disjoint by file
------------------------
``"train"`` pairs are calibration data and ``"heldout"`` pairs are evaluation data. The
textcorpus held-out files (one in 20) give only about 160 pairs, too few for a stable accuracy,
so ``"heldout"`` here takes every textcorpus held-out file *and* one in
:data:`EXTRA_HELDOUT_BUCKETS` of the textcorpus train files, chosen by a stable (salted)
SHA-256 hash of the path relative to the stdlib root; ``"train"`` takes the remaining
textcorpus train files. Hence a file is never in both splits, and no textcorpus held-out file is
ever used as calibration data. On CPython 3.11.7 this gives 2415 train pairs (587 files) and
484 held-out pairs (147 files). Files are disjoint, texts need not be: a docstring copied
between two files can give the same pair in both splits (4 pairs on CPython 3.11.7).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from edgeloom.data.textcorpus import Split, stdlib_files, stdlib_root

MIN_QUERY_WORDS = 4
"""A query (the summary sentence) needs at least this many words."""

MIN_DOCUMENT_WORDS = 12
"""A document (the docstring body) needs at least this many words."""

EXTRA_HELDOUT_BUCKETS = 8
"""One textcorpus train file in ``EXTRA_HELDOUT_BUCKETS`` (by salted path hash) is held out."""

_HASH_SALT = "edgeloom.data.text_pairs:"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`'\"])")
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

Pair = tuple[str, str]


def docstring_pairs(split: Split, limit: int | None = None) -> list[Pair]:
    """Docstring ``(query, document)`` pairs of one split.

    Parameters
    ----------
    split
        ``"train"`` (calibration data) or ``"heldout"`` (evaluation data); see the module
        docstring for how files are assigned.
    limit
        If given and smaller than the number of pairs, return ``limit`` pairs evenly spread
        over the deterministic order (so they span many files), keeping their order.

    Returns
    -------
    list[tuple[str, str]]
        ``(query, document)`` pairs; no query and no document occurs twice.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    pairs = _unique(pair for path in split_files(split) for pair in file_pairs(path))
    if limit is None or limit >= len(pairs):
        return pairs
    return [pairs[index * len(pairs) // limit] for index in range(limit)]


def split_files(split: Split) -> list[Path]:
    """Standard-library files whose docstrings make the pairs of one split, sorted.

    Parameters
    ----------
    split
        ``"train"`` or ``"heldout"``.

    Returns
    -------
    list[pathlib.Path]
        Absolute paths, sorted; the two splits have no file in common.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    train = stdlib_files("train")
    if split == "train":
        return [path for path in train if not _extra_heldout(path)]
    moved = [path for path in train if _extra_heldout(path)]
    return sorted(stdlib_files("heldout") + moved)


def file_pairs(path: Path) -> list[Pair]:
    """The ``(query, document)`` pairs of one Python source file, in source order.

    Parameters
    ----------
    path
        A Python source file (its encoding declaration, if any, is honoured).

    Returns
    -------
    list[tuple[str, str]]
        One pair per module, class or function docstring that passes the word-count filters;
        duplicates are not removed here.
    """
    tree = ast.parse(path.read_bytes(), filename=str(path))
    nodes = sorted(
        (node for node in ast.walk(tree) if isinstance(node, _DOCUMENTED)),
        key=lambda node: getattr(node, "lineno", 0),
    )
    docstrings = (ast.get_docstring(node) for node in nodes)
    pairs = (split_docstring(docstring) for docstring in docstrings if docstring)
    return [pair for pair in pairs if _long_enough(pair)]


def split_docstring(docstring: str) -> Pair:
    """Split a docstring into its summary sentence and the whitespace-normalised rest.

    The summary is the first sentence of the first paragraph; a sentence ends at ``.``, ``!``
    or ``?`` followed by whitespace and a capital letter, a parenthesis or a quote.

    Parameters
    ----------
    docstring
        A cleaned docstring, as :func:`ast.get_docstring` returns it.

    Returns
    -------
    tuple[str, str]
        ``(summary, body)``; ``body`` is empty when the docstring is one sentence.
    """
    head, *body = _PARAGRAPH_BREAK.split(docstring, maxsplit=1)
    summary, *rest_of_head = _SENTENCE_BREAK.split(_normalise(head), maxsplit=1)
    return summary, _normalise(" ".join([*rest_of_head, *body]))


def _long_enough(pair: Pair) -> bool:
    query, document = pair
    return len(query.split()) >= MIN_QUERY_WORDS and len(document.split()) >= MIN_DOCUMENT_WORDS


def _unique(pairs: Iterable[Pair]) -> list[Pair]:
    seen_queries: set[str] = set()
    seen_documents: set[str] = set()
    kept = []
    for query, document in pairs:
        if query in seen_queries or document in seen_documents:
            continue
        seen_queries.add(query)
        seen_documents.add(document)
        kept.append((query, document))
    return kept


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _extra_heldout(path: Path) -> bool:
    relative = path.relative_to(stdlib_root()).as_posix()
    digest = hashlib.sha256((_HASH_SALT + relative).encode()).digest()
    return int.from_bytes(digest[:4], "big") % EXTRA_HELDOUT_BUCKETS == 0
