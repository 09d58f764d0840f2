"""Reading a resource file as kubectl would: YAML problems named by line and column, tags and
duplicate keys refused, numbers typed as kubectl types them, and ``edgeloom run`` exiting 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloom.api.resource import InvalidResource
from edgeloom.cli.main import EXIT_INVALID, main
from edgeloom.local.runner import load_and_validate
from edgeloom.runtime.role import MAX_RESOURCE_FILE_BYTES, load_resource_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "splittraining-mnist1d.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(InvalidResource) as info:
        load_resource_file(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("kind: [SplitTrainingJob\n", "line 2, column 1", "expected ',' or ']'"),
        ("kind: a\n\tspec: {}\n", "line 2, column 1", "'\\t'"),
        ("spec: !!python/object:os.system {}\n", "line 1, column 7", "python/object"),
        ("spec: !!binary aGk=\n", "line 1, column 7", "binary"),
        ("spec: !local {}\n", "line 1, column 7", "!local"),
        ("spec:\n  seed: 1\n  gpu: true\n  seed: 2\n", "line 4, column 3", "duplicate key 'seed'"),
    ],
    ids=["unclosed", "tab", "python-tag", "binary-tag", "local-tag", "duplicate-key"],
)
def test_yaml_problems_name_the_line_and_column(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    message = refusal(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'job.yaml'}: {where}: ")
    assert problem in message


def test_a_duplicate_key_names_its_first_line(tmp_path: Path) -> None:
    assert "first given on line 2" in refusal(write(tmp_path, "a: 1\nb: 2\nb: 3\n"))


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    doc = load_resource_file(write(tmp_path, "base: &b {x: 1, y: 2}\nspec: {<<: *b, x: 3}\n"))
    assert doc["spec"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "exactly one resource, found 0"),
        ("a: 1\n---\nb: 2\n", "exactly one resource, found 2"),
        ("just some text\n", "must be a mapping"),
        ("a: &x\n  b: *x\n", "contain itself"),
        ("[" * 2000 + "]" * 2000, "nested too deeply"),
    ],
    ids=["empty", "two-documents", "text", "recursive", "deep"],
)
def test_what_is_no_resource_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in refusal(write(tmp_path, text))


def test_aliases_cannot_expand_without_bound(tmp_path: Path) -> None:
    lines = ["l0: &l0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    assert "past 100000 nodes" in refusal(write(tmp_path, "\n".join(lines) + "\n"))


def test_a_file_too_large_or_not_text_is_refused(tmp_path: Path) -> None:
    big = write(tmp_path, "a: " + "x" * MAX_RESOURCE_FILE_BYTES + "\n")
    assert "larger than" in refusal(big)
    binary = tmp_path / "image.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert "not a UTF-8 text file" in refusal(binary)


def test_scalars_are_typed_as_kubectl_types_them(tmp_path: Path) -> None:
    text = "a: 1e15\nb: 2.0e6\nc: 0.2\nd: 128\ne: 2024-01-01\nf: '5'\ng: true\nh: null\n"
    assert load_resource_file(write(tmp_path, text)) == {
        "a": 1e15,
        "b": 2.0e6,
        "c": 0.2,
        "d": 128,
        "e": "2024-01-01",  # a string to kubectl, not a date
        "f": "5",
        "g": True,
        "h": None,
    }


# --- load_and_validate: the local runner refuses what kubectl apply would -------------------


def example_with(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert text.count(old) == 1, old
    return write(tmp_path, text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("    seed: 0\n", "    seed: 1e15\n", "spec.training.seed: Input should be less than or "),
        ("    seed: 0\n", "    seed: 1e30\n", "spec.training.seed: Input should be less than or "),
        ("    seed: 0\n", "    seed: '5'\n", "spec.training.seed: Input should be a valid integer"),
        (
            "    seed: 0\n",
            "    lrFloor: .inf\n",
            "spec.training.lrFloor: Input should be a finite ",
        ),
        (
            "    samples: 5000\n",
            "    samples: 1e12\n",
            "spec.dataset.samples: Input should be less ",
        ),
        (
            "      count: 4\n",
            "      count: true\n",
            "spec.workers[0].count: Input should be a valid",
        ),
        ("  checkpointInterval: 5\n", "  gpu: 1\n", "spec.gpu: Input should be a valid boolean"),
        ("  emulation: modelled\n", "status: {}\n", "status: a resource file must not set"),
        ("  emulation: modelled\n", "extra: 1\n", "extra: unknown field"),
        (
            "  name: mnist1d-mergesfl\n",
            "  name: mnist1d-mergesfl\n  uid: run.1\n",
            "metadata.uid: Value error, must be letters, digits and dashes",
        ),
    ],
    ids=[
        "seed-1e15",
        "seed-1e30",
        "seed-string",
        "lr-floor-inf",
        "samples-1e12",
        "count-bool",
        "gpu-int",
        "status",
        "unknown-root-field",
        "uid-dot",
    ],
)
def test_load_and_validate_names_the_field(tmp_path: Path, old: str, new: str, line: str) -> None:
    with pytest.raises(InvalidResource) as info:
        load_and_validate(example_with(tmp_path, old, new))
    assert any(text.startswith(line) for text in str(info.value).splitlines()), str(info.value)


def test_integral_numbers_fit_integer_fields(tmp_path: Path) -> None:
    _, resource = load_and_validate(example_with(tmp_path, "rounds: 40\n", "rounds: 40.0\n"))
    assert resource.spec.training.rounds == 40


def test_a_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidResource, match="No such file"):
        load_and_validate(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text",
    ["kind: [x\n", "spec: !!python/object/apply:os.system ['true']\n", "a: 1\na: 2\n"],
    ids=["not-yaml", "python-tag", "duplicate-key"],
)
def test_edgeloom_run_exits_2_on_a_bad_file(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", str(write(tmp_path, text)), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID == 2
    assert "is not a valid resource" in err and "line " in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
