"""Text corpora: the stdlib train/held-out split and user-supplied corpus files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeloom.data.textcorpus import load_text_corpus, read_texts, stdlib_files, stdlib_root


def test_stdlib_split_is_disjoint_deterministic_and_nonempty() -> None:
    train, heldout = stdlib_files("train"), stdlib_files("heldout")
    assert heldout and len(train) > 10 * len(heldout)
    assert not set(train) & set(heldout)
    assert stdlib_files("train") == train == sorted(train)
    assert stdlib_files("heldout") == heldout
    root = stdlib_root()
    assert all(path.suffix == ".py" and path.is_relative_to(root) for path in train + heldout)


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split must be"):
        stdlib_files("validation")  # type: ignore[arg-type]


def test_read_texts_reads_utf8_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 'é'\n", encoding="utf-8")
    second.write_text("y = 2\n", encoding="utf-8")
    assert read_texts([second, first]) == ["y = 2\n", "x = 'é'\n"]


def test_read_texts_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=r"latin1\.txt: not valid UTF-8"):
        read_texts([path])


def test_load_text_corpus_reads_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("one document\nover two lines\n", encoding="utf-8")
    assert load_text_corpus(path) == ["one document\nover two lines\n"]
    assert load_text_corpus(str(path)) == load_text_corpus(path)


def test_load_text_corpus_reads_jsonl_text_fields(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    records = [{"text": "first", "id": 1}, {"text": "second\nline"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert load_text_corpus(path) == ["first", "second\nline"]


def test_load_text_corpus_reads_a_directory_recursively_in_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.md").write_text("# b", encoding="utf-8")
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    (tmp_path / "sub" / "c.txt").write_text("c", encoding="utf-8")
    (tmp_path / "ignored.py").write_text("print()", encoding="utf-8")
    assert load_text_corpus(tmp_path) == ["a", "# b", "c"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "no such file or directory"),
        ("corpus.csv", "a,b\n", "unsupported corpus"),
        ("blank.txt", "  \n", "holds no text"),
        ("broken.jsonl", '{"text": "ok"}\n{not json\n', r":2: not valid JSON"),
        ("fieldless.jsonl", '{"body": "x"}\n', r":1: expected a JSON object with a string 'text'"),
        ("listed.jsonl", '["text"]\n', r":1: expected a JSON object"),
    ],
)
def test_load_text_corpus_names_the_path_of_bad_input(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as raised:
        load_text_corpus(path)
    assert str(path) in str(raised.value)


def test_load_text_corpus_rejects_a_directory_without_text_files(tmp_path: Path) -> None:
    (tmp_path / "notes.py").write_text("x = 1", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \.txt or \.md files") as raised:
        load_text_corpus(tmp_path)
    assert str(tmp_path) in str(raised.value)
