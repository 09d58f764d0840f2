"""The benchmark harness: registry, selection, the results writer and the plot helper."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edgeloom.api.messages import JobResult
from edgeloom.bench import (
    Benchmark,
    BenchResult,
    Case,
    CaseResult,
    UnknownBenchmark,
    UnknownSelection,
    benchmark_names,
    get_benchmark,
    registry,
    run_benchmark,
)
from edgeloom.bench.plot import grouped_bars, method_lines, panels
from edgeloom.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Toy(Benchmark[list[str]]):
    """Squares and doubles: a benchmark with nothing to start."""

    def cases(self) -> list[Case]:
        sizes = {"small": 2} if self.quick else {"small": 2, "large": 3}
        return [Case(name, {"n": n}) for name, n in sizes.items()]

    def methods(self) -> list[str]:
        return ["square", "double"]

    @contextmanager
    def session(self) -> Iterator[list[str]]:
        log: list[str] = ["opened"]
        self.log = log
        yield log
        log.append("closed")

    def run_case(self, case: Case, methods: Sequence[str], session: list[str]) -> CaseResult:
        session.append(case.name)
        n = case.params["n"]
        figures = {
            "square": {"value_total": n * n, "time_to_target_s": None},
            "double": {"value_total": 2 * n, "time_to_target_s": 1.5},
        }
        return CaseResult({m: figures[m] for m in methods}, params={"runs": len(session) - 1})

    def plot(self, result: BenchResult, path: Path) -> None:
        methods = list(result.cases[0]["results"])
        with panels(path, 1) as (ax,):
            method_lines(
                ax,
                {
                    m: (
                        [c["params"]["n"] for c in result.cases],
                        [c["results"][m]["value_total"] for c in result.cases],
                    )
                    for m in methods
                },
            )


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> type[Toy]:
    """``Toy`` registered as ``toy`` in a copy of the registry (gone after the test)."""
    benchmark_names()  # the shipped benchmarks register on import: into the real registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry.benchmark("toy")(Toy)


def test_a_run_writes_the_one_results_shape_and_a_png(toy: type[Toy], tmp_path: Path) -> None:
    bench = toy()
    result, files = run_benchmark(bench, tmp_path)

    assert files.json == tmp_path / "toy.json" and files.png == tmp_path / "toy.png"
    data = json.loads(files.json.read_text())
    assert set(data) == {"benchmark", "revision", "command", "cases"}
    assert data["benchmark"] == "toy"
    assert data["command"] == "edgeloom bench toy"
    assert data["revision"]
    run = {"revision": data["revision"], "command": "edgeloom bench toy"}
    assert data["cases"] == [
        {
            "case": "small",
            **run,
            "params": {"n": 2, "runs": 1},
            "results": {
                "square": {"value_total": 4, "time_to_target_s": None},
                "double": {"value_total": 4, "time_to_target_s": 1.5},
            },
        },
        {
            "case": "large",
            **run,
            "params": {"n": 3, "runs": 2},
            "results": {
                "square": {"value_total": 9, "time_to_target_s": None},
                "double": {"value_total": 6, "time_to_target_s": 1.5},
            },
        },
    ]
    assert data["cases"] == result.cases
    assert bench.log == ["opened", "small", "large", "closed"]  # one session for every case
    assert files.png.read_bytes().startswith(PNG_MAGIC)


def test_quick_and_a_selection_are_recorded_in_the_command(toy: type[Toy], tmp_path: Path) -> None:
    _, files = run_benchmark(toy(quick=True), tmp_path, methods=["double"])
    data = json.loads(files.json.read_text())
    assert data["command"] == "edgeloom bench toy --quick --method double"
    assert [c["case"] for c in data["cases"]] == ["small"]
    assert list(data["cases"][0]["results"]) == ["double"]

    _, files = run_benchmark(toy(), tmp_path, cases=["large"], methods=["double", "square"])
    data = json.loads(files.json.read_text())
    assert data["command"] == "edgeloom bench toy --case large --method double --method square"
    assert list(data["cases"][0]["results"]) == ["square", "double"]  # the benchmark's order


def test_a_run_of_chosen_cases_keeps_the_other_recorded_cases(
    toy: type[Toy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_benchmark(toy(), tmp_path, cases=["large"])
    first = json.loads((tmp_path / "toy.json").read_text())
    assert [c["case"] for c in first["cases"]] == ["large"]

    def curves(self: Toy, case: Case, methods: Sequence[str], session: Any) -> CaseResult:
        return CaseResult({m: {"value_total": 0} for m in methods}, plot_data={"xs": [1, 2]})

    monkeypatch.setattr(Toy, "run_case", curves)
    _, files = run_benchmark(toy(), tmp_path, cases=["small"])
    data = json.loads(files.json.read_text())
    assert data["command"] == "edgeloom bench toy --case small"
    small, large = data["cases"]  # in the benchmark's order, whatever ran last
    assert small["case"] == "small" and small["plot_data"] == {"xs": [1, 2]}
    assert small["command"] == "edgeloom bench toy --case small" and small["revision"]
    assert large == first["cases"][0]  # as it was recorded, with its own run

    _, files = run_benchmark(toy(), tmp_path)  # every case: the file is rewritten
    assert {c["command"] for c in json.loads(files.json.read_text())["cases"]} == {
        "edgeloom bench toy"
    }
    run_benchmark(toy(quick=True), tmp_path, cases=["small"])  # a smoke run never merges
    assert [c["case"] for c in json.loads(files.json.read_text())["cases"]] == ["small"]


def test_an_unknown_case_or_method_fails_before_anything_starts(
    toy: type[Toy], tmp_path: Path
) -> None:
    bench = toy()
    with pytest.raises(UnknownSelection, match=r"unknown case 'huge' \(known: small, large\)"):
        run_benchmark(bench, tmp_path, cases=["huge"])
    with pytest.raises(UnknownSelection, match="unknown method 'cube'"):
        run_benchmark(bench, tmp_path, methods=["cube"])
    assert not hasattr(bench, "log")
    assert not list(tmp_path.iterdir())


def test_figures_for_other_methods_than_asked_are_an_error(
    toy: type[Toy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def square_only(self: Toy, case: Case, methods: Sequence[str], session: Any) -> CaseResult:
        return CaseResult({"square": {"value_total": 1}})

    monkeypatch.setattr(Toy, "run_case", square_only)
    with pytest.raises(RuntimeError, match=r"gave figures for \['square'\], not \['square', 'd"):
        run_benchmark(toy(), tmp_path)


def test_the_decorator_registers_a_name_once(toy: type[Toy]) -> None:
    assert toy.name == "toy"
    assert get_benchmark("toy") is Toy
    assert "toy" in benchmark_names()

    class Other(Toy):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        registry.benchmark("toy")(Other)


def test_every_shipped_benchmark_is_registered() -> None:
    names = benchmark_names()
    assert names[:3] == ["transport", "splittraining", "prunejob"]
    for name in names[:3]:
        assert get_benchmark(name).name == name


def test_the_test_kit_adds_the_operator_benchmark_through_its_entry_point() -> None:
    assert "operator" in benchmark_names()
    assert get_benchmark("operator").__module__ == "edgeloom_testkit.bench_operator"


def test_without_the_test_kit_the_operator_benchmark_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    benchmark_names()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry._REGISTRY.pop("operator", None)
    monkeypatch.setattr(registry, "_entry_points", dict)
    assert "operator" not in benchmark_names()
    with pytest.raises(UnknownBenchmark, match=r"needs the edgeloom test kit \(pip install -e"):
        get_benchmark("operator")


def test_an_unknown_benchmark_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownBenchmark, match=r"unknown benchmark 'nope' \(known: transport, "):
        get_benchmark("nope")
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err
    for name in ("transport", "splittraining", "prunejob", "operator"):
        assert name in err


def test_bench_help_lists_every_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    listed = out.split("benchmarks:\n", 1)[1]
    assert [line.split()[0] for line in listed.splitlines() if line.strip()] == [
        "transport",
        "splittraining",
        "prunejob",
        "hat",
        "operator",
    ]


def test_grouped_bars_put_each_series_beside_the_last(tmp_path: Path) -> None:
    with panels(tmp_path / "bars.png", 1) as (ax,):
        tops = grouped_bars(ax, ["a", "b"], {"raw": [1.0, 2.0], "codec": [3.0, 4.0]})
    assert [top for _, top in tops] == [3.0, 4.0]  # the last series, for annotations
    assert tops[0][0] == pytest.approx(0.2) and tops[1][0] == pytest.approx(1.2)
    assert (tmp_path / "bars.png").read_bytes().startswith(PNG_MAGIC)


def test_prunejob_figures_come_from_the_jobs_result() -> None:
    from edgeloom.bench.prunejob import dense_figures, figures

    summary: dict[str, Any] = {  # what the pruner role's result summary holds
        "method": "comp",
        "ratio": 0.2,
        "params_before": 100,
        "params_after": 84,
        "block_params_before": 80,
        "block_params_after": 64,
        "removed_layers": "2,4",
        "quality_before": 1.0,
        "quality_after": 0.9,
        "retrieval_accuracy_after": 0.4,
        "prune_wall_s": 1.5,
        "peak_memory_bytes": 2048,
    }
    result = JobResult(succeeded=True, status={}, summary=summary, metric_name="embedding_fidelity")
    assert figures(result, "minilm") == {
        "embedding_fidelity": 0.9,
        "retrieval_accuracy": 0.4,
        "params": 84,
        "block_params": 64,
        "achieved_ratio": pytest.approx(0.2),
        "removed_layers": [2, 4],
        "wall_s": 1.5,
        "peak_rss_bytes": 2048,
    }
    assert dense_figures(result, "minilm") == {
        "params_before": 100,
        "block_params_before": 80,
        "dense_embedding_fidelity": 1.0,
        "dense_retrieval_accuracy": None,  # no retrieval_accuracy_before in this summary
    }
    summary |= {"removed_layers": "none", "prune_peak_memory_bytes": 512}
    pruned = figures(result.model_copy(update={"summary": summary}), "minilm")
    assert pruned["removed_layers"] == []
    assert pruned["peak_memory_bytes"] == 512
