"""What a finished local run prints about the recorded benchmarks of its own spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeloom.bench.results import comparable_spec, recorded_cases_of
from edgeloom.local.report import print_comparison

SPEC = {"method": "mergesfl", "training": {"rounds": 20, "learningRate": 0.1}}
RESULTS = {
    "mergesfl": {"final_accuracy_mean": 0.9, "time_to_target_s_mean": 20.0, "rounds": 20},
    "fedavg": {"final_accuracy_mean": 0.81234, "time_to_target_s_mean": None, "rounds": 20},
}


def write(results_dir: Path, name: str, cases: list[dict[str, object]]) -> None:
    results_dir.mkdir(exist_ok=True)
    recorded = {"benchmark": name, "revision": "abc1234", "command": f"edgeloom bench {name}"}
    (results_dir / f"{name}.json").write_text(json.dumps({**recorded, "cases": cases}))


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    write(
        out,
        "splittraining",
        [
            {"case": "other", "params": {"spec": {"training": {"rounds": 5}}}, "results": {}},
            {"case": "example", "params": {"spec": comparable_spec(SPEC)}, "results": RESULTS},
        ],
    )
    write(out, "transport", [{"case": "raw", "params": {}, "results": {}}])
    (out / "broken.json").write_text("{not json")
    return out


def test_only_the_cases_recorded_on_this_spec_match_whatever_its_method(
    results_dir: Path,
) -> None:
    for method in ("mergesfl", "fedavg"):
        found = recorded_cases_of({**SPEC, "method": method}, results_dir)
        assert [(c.case, c.command, c.revision) for c in found] == [
            ("example", "edgeloom bench splittraining", "abc1234")
        ]
    changed = {**SPEC, "training": {"rounds": 21, "learningRate": 0.1}}
    assert recorded_cases_of(changed, results_dir) == []
    assert recorded_cases_of(SPEC, results_dir / "missing") == []


def test_the_comparison_names_the_command_and_shows_each_method_s_means(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    print_comparison(SPEC, results_dir)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "`edgeloom bench splittraining` (revision abc1234), case 'example'" in lines[0]
    assert lines[1].split() == ["method", "final_accuracy", "time_to_target_s"]
    assert lines[2].split() == ["mergesfl", "0.9", "20"]
    assert lines[3].split() == ["fedavg", "0.8123", "never"]


def test_nothing_is_printed_for_a_spec_no_benchmark_ran(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    print_comparison({"training": {"rounds": 3}}, results_dir)
    assert capsys.readouterr().out == ""
