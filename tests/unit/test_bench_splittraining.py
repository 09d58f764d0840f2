"""The splittraining benchmark's figures over seeds: time to target, the equal-time budget,
MergeSFL against its best baseline, and the cases the issue asks for."""

from __future__ import annotations

from typing import Any

import pytest

from edgeloom.api.kinds.splittraining import SplitTrainingJobSpec
from edgeloom.bench.results import comparable_spec
from edgeloom.bench.splittraining import (
    CASES,
    METHODS,
    OVERRIDES,
    SplitTrainingBenchmark,
    accuracy_at,
    add_budget,
    against_baselines,
    best_setting,
    case_spec,
    resource,
    seed_figures,
    time_to_target,
)


def history(*points: tuple[float, float], bytes_total: int = 100) -> list[dict[str, Any]]:
    """Rounds of (virtual seconds, accuracy)."""
    return [
        {"round": i, "virtual_time_seconds": t, "accuracy": a, "bytes_total": bytes_total}
        for i, (t, a) in enumerate(points, 1)
    ]


def test_time_to_target_is_the_first_crossing_and_none_when_never() -> None:
    run = history((1.0, 0.3), (2.0, 0.7), (3.0, 0.6), (4.0, 0.8))
    assert time_to_target(run, 0.7) == 2.0
    assert time_to_target(run, 0.9) is None


def test_accuracy_at_a_budget_is_the_last_round_within_it() -> None:
    run = history((1.0, 0.3), (2.0, 0.7), (3.0, 0.6))
    assert accuracy_at(run, 2.5) == 0.7
    assert accuracy_at(run, 3.0) == 0.6
    assert accuracy_at(run, 0.5) == 0.0  # nothing finished by then


def test_seed_figures_average_and_need_every_seed_for_a_time_to_target() -> None:
    a = history((1.0, 0.5), (2.0, 0.8), bytes_total=10)
    b = history((2.0, 0.4), (4.0, 0.6), bytes_total=30)
    figures = seed_figures([a, b], target=0.6)
    assert figures["final_accuracy_mean"] == pytest.approx(0.7)
    assert figures["final_accuracy_std"] == pytest.approx(0.1)
    assert figures["final_accuracy_by_seed"] == [0.8, 0.6]
    assert figures["time_to_target_s_mean"] == pytest.approx(3.0)
    assert figures["virtual_time_s_mean"] == pytest.approx(3.0)
    assert figures["bytes_total_mean"] == pytest.approx(20)
    missed = seed_figures([a, b], target=0.75)
    assert missed["time_to_target_s_mean"] is None
    assert missed["time_to_target_s_by_seed"] == [2.0, None]


def test_the_budget_is_the_fastest_method_s_time_and_every_method_is_read_there() -> None:
    curves = {
        "mergesfl": [history((1.0, 0.5), (2.0, 0.9))],
        "fedavg": [history((3.0, 0.6), (6.0, 0.8))],
        "mergesfl-no-merging": [history((0.5, 0.2), (1.0, 0.4))],  # an ablation sets no budget
    }
    results = {m: seed_figures(c, 0.7) for m, c in curves.items()}
    assert add_budget(results, curves) == 2.0
    assert results["mergesfl"]["accuracy_at_budget_mean"] == 0.9
    assert results["fedavg"]["accuracy_at_budget_mean"] == 0.0
    assert results["mergesfl-no-merging"]["accuracy_at_budget_mean"] == 0.4


def test_mergesfl_is_compared_with_the_best_and_the_fastest_baseline() -> None:
    def figures(final: float, ttt: float | None) -> dict[str, Any]:
        return {"final_accuracy_mean": final, "time_to_target_s_mean": ttt}

    results = {
        "mergesfl": figures(0.80, 10.0),
        "splitfed": figures(0.70, 40.0),
        "sfl": figures(0.75, None),
        "fedavg": figures(0.60, 20.0),
        "mergesfl-no-merging": figures(0.99, 1.0),  # ablations are not baselines
    }
    versus = against_baselines(results)
    assert versus["best_baseline"] == "sfl"
    assert versus["gain_points"] == pytest.approx(5.0)
    assert (versus["fastest_baseline"], versus["speedup"]) == ("fedavg", pytest.approx(2.0))
    results["mergesfl"]["time_to_target_s_mean"] = None
    assert against_baselines(results)["speedup"] is None


def test_the_best_setting_has_the_best_final_accuracy_then_the_shorter_time() -> None:
    runs = {
        (0.05, 0.0): history((5.0, 0.7)),
        (0.1, 0.9): history((4.0, 0.8)),
        (0.1, 0.0): history((3.0, 0.8)),
    }
    assert best_setting(runs) == (0.1, 0.0)


def test_a_setting_whose_run_failed_is_never_the_best() -> None:
    runs = {(0.1, 0.9): None, (0.05, 0.0): history((5.0, 0.3))}
    assert best_setting(runs) == (0.05, 0.0)
    with pytest.raises(RuntimeError, match="every setting"):
        best_setting({(0.1, 0.9): None})


def test_the_issue_s_cases_run_ten_of_many_workers_with_targets_fixed() -> None:
    cases = {c.name: c.params for c in SplitTrainingBenchmark().cases()}
    mnist1d = [n for n in cases if n.startswith("mnist1d-")]
    assert len(mnist1d) == 8
    assert {cases[n]["workers"] for n in mnist1d} == {20, 40}
    assert all(p.get("workers_per_round") == 10 for p in cases.values() if "spec" not in p)
    assert all(p["seeds"] == [0, 1, 2] for p in cases.values())
    assert "fashion-mnist-alexnet-dirichlet-0.1-10of20" in cases
    quick = SplitTrainingBenchmark(quick=True)
    assert [c.name for c in quick.cases()] == ["mnist1d-dirichlet-0.1-10of20"]
    assert quick.seeds == (0, 1)


@pytest.mark.parametrize("case", list(CASES))
def test_every_case_and_method_is_a_valid_modelled_run_of_every_round(case: str) -> None:
    for method in OVERRIDES:
        spec = resource(case_spec(case, (0.1, 0.9), 40), OVERRIDES[method], seed=2)["spec"]
        valid = SplitTrainingJobSpec.model_validate(spec)
        assert valid.training.seed == 2
        assert valid.emulation.value == "modelled"
        assert valid.stop.stop_at_target is False
    assert set(METHODS) <= set(OVERRIDES)


def test_the_example_case_records_the_example_s_own_spec() -> None:
    example = {c.name: c.params for c in SplitTrainingBenchmark().cases()}["example"]
    spec = example["spec"]
    assert spec == comparable_spec(SplitTrainingJobSpec.model_validate(spec).to_wire())
    assert "method" not in spec
    assert example["target_accuracy"] == spec["stop"]["targetAccuracy"]


def test_the_plot_draws_the_cases_that_kept_their_curves(tmp_path: Any) -> None:
    from PIL import Image

    from edgeloom.bench.results import BenchResult

    result = BenchResult("splittraining", "edgeloom bench splittraining")
    params = {"target_accuracy": 0.6, "budget_s": 2.0}
    curves = {m: [([1.0, 2.0, 3.0], [0.2, 0.5, 0.7])] for m in METHODS}
    result.add_case("kept", params, {}, plot_data=curves)
    result.add_case("older", params, {})
    SplitTrainingBenchmark().plot(result, tmp_path / "one.png")
    result.add_case("kept-too", params, {}, plot_data=curves)
    SplitTrainingBenchmark().plot(result, tmp_path / "two.png")
    one, two = (Image.open(tmp_path / f"{n}.png").size for n in ("one", "two"))
    assert one[1] == two[1] and two[0] > 1.8 * one[0]
