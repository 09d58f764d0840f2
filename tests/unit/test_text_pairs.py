"""Docstring (summary, body) pairs from the standard library: extraction, filters and splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloom.data import text_pairs
from edgeloom.data.text_pairs import (
    MIN_DOCUMENT_WORDS,
    MIN_QUERY_WORDS,
    docstring_pairs,
    file_pairs,
    split_docstring,
    split_files,
)
from edgeloom.data.textcorpus import stdlib_files

BODY = "This body has more than twelve words so that the pair passes the document filter."

SYNTHETIC_MODULE = f'''"""Synthetic module used by the tests.

{BODY}
"""


def no_docstring():
    return 1


def one_line():
    """Only a summary line here, without any body."""


def short_query():
    """Too short.

    {BODY}
    """


def short_body():
    """A summary that is long enough.

    Body too short.
    """


class Widget:
    """A widget that does widget things.

    {BODY}
    """

    def method(self):
        """Return the widget's   spaced
        summary.

        First paragraph
        of the body.

        Second paragraph, with enough words in total to pass.
        """

        def nested():
            """Nested functions count as well. {BODY}"""


async def fetch():
    """Fetch data asynchronously from nowhere, e.g. here. {BODY}"""
'''


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(source)
    return path


def test_split_docstring_takes_the_first_sentence_and_normalises_the_rest() -> None:
    assert split_docstring("Do a thing.\n\nFirst  body\nline.\n\nSecond.") == (
        "Do a thing.",
        "First body line. Second.",
    )
    assert split_docstring("Do a thing\nover two lines. Then more? Yes.") == (
        "Do a thing over two lines.",
        "Then more? Yes.",
    )
    assert split_docstring("Only one sentence.") == ("Only one sentence.", "")


def test_split_docstring_keeps_abbreviations_inside_the_summary() -> None:
    assert split_docstring("Use a value, e.g. three. Body follows.") == (
        "Use a value, e.g. three.",
        "Body follows.",
    )


def test_file_pairs_extracts_documented_nodes_in_source_order_and_applies_filters(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, "synthetic.py", SYNTHETIC_MODULE)
    assert file_pairs(path) == [
        ("Synthetic module used by the tests.", BODY),
        ("A widget that does widget things.", BODY),
        (
            "Return the widget's spaced summary.",
            "First paragraph of the body. Second paragraph, with enough words in total to pass.",
        ),
        ("Nested functions count as well.", BODY),
        ("Fetch data asynchronously from nowhere, e.g. here.", BODY),
    ]


def _function(name: str, query: str, document: str) -> str:
    return f'def {name}():\n    """{query}\n\n    {document}\n    """\n\n\n'


def test_docstring_pairs_skips_repeated_queries_and_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "A different body that also has more than twelve words, so it passes the filter."
    third = "A third body that also has more than twelve words, so it passes the filter too."
    first = _write(tmp_path, "a.py", _function("f", "The first summary sentence.", BODY))
    second = _write(
        tmp_path,
        "b.py",
        _function("f", "The first summary sentence.", other)
        + _function("g", "A new summary for an old body.", BODY)
        + _function("h", "A new summary for a new body.", other)
        + _function("i", "The last summary sentence here.", third),
    )
    monkeypatch.setattr(text_pairs, "split_files", lambda split: [first, second])
    pairs = docstring_pairs("heldout")
    assert pairs == [
        ("The first summary sentence.", BODY),
        ("A new summary for a new body.", other),
        ("The last summary sentence here.", third),
    ]
    assert docstring_pairs("heldout", limit=2) == [pairs[0], pairs[1]]
    assert docstring_pairs("heldout", limit=1) == [pairs[0]]
    assert docstring_pairs("heldout", limit=100) == pairs
    with pytest.raises(ValueError, match="limit"):
        docstring_pairs("heldout", limit=-1)


def test_splits_are_disjoint_by_file_and_cover_the_corpus() -> None:
    train, heldout = split_files("train"), split_files("heldout")
    assert train == sorted(train) and heldout == sorted(heldout)
    assert not set(train) & set(heldout)
    assert set(train) | set(heldout) == set(stdlib_files("train")) | set(stdlib_files("heldout"))
    # Calibration never uses a file that the text corpus holds out.
    assert set(stdlib_files("heldout")) <= set(heldout)


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        split_files("test")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def heldout_pairs() -> list[tuple[str, str]]:
    return docstring_pairs("heldout")


def test_heldout_pairs_are_deterministic_filtered_and_unique(
    heldout_pairs: list[tuple[str, str]],
) -> None:
    assert docstring_pairs("heldout") == heldout_pairs
    assert len(heldout_pairs) >= 300
    queries = [query for query, _ in heldout_pairs]
    documents = [document for _, document in heldout_pairs]
    assert len(set(queries)) == len(queries) and len(set(documents)) == len(documents)
    assert all(len(query.split()) >= MIN_QUERY_WORDS for query in queries)
    assert all(len(document.split()) >= MIN_DOCUMENT_WORDS for document in documents)


def test_limit_spreads_over_the_split_in_order(heldout_pairs: list[tuple[str, str]]) -> None:
    subset = docstring_pairs("heldout", limit=50)
    assert len(subset) == 50
    positions = [heldout_pairs.index(pair) for pair in subset]
    assert positions == sorted(positions)
    assert positions[-1] >= len(heldout_pairs) * 49 // 50
