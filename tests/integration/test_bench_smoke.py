"""``edgeloom bench NAME --quick``: each benchmark runs and writes the shared results shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloom.bench import benchmark_names

# prunejob's quick run starts four PruneJobs, a process each: over 300 s on a busy 2-core machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _check_shape(path: Path, benchmark: str, methods: set[str], metrics: set[str]) -> dict:
    data = json.loads(path.read_text())
    assert data["benchmark"] == benchmark
    assert data["command"].startswith(f"edgeloom bench {benchmark}")
    assert data["revision"]
    assert data["cases"]
    for case in data["cases"]:
        assert {"case", "command", "revision", "params", "results"} <= set(case)
        assert set(case) <= {"case", "command", "revision", "params", "results", "plot_data"}
        assert case["command"] == data["command"]
        assert set(case["results"]) == methods
        for figures in case["results"].values():
            assert metrics <= set(figures)
    return data


SMOKE = [  # name, methods of its --quick run, metrics every method has
    pytest.param("transport", {"codec", "raw"}, {"throughput_bytes_per_s"}),
    pytest.param(
        "splittraining",
        {"mergesfl", "fedavg"},
        {"final_accuracy_mean", "final_accuracy_std", "time_to_target_s_mean"}
        | {"accuracy_at_budget_mean", "virtual_time_s_mean", "bytes_total_mean"},
    ),
    pytest.param("prunejob", {"comp", "llm-pruner"}, {"params", "wall_s", "peak_rss_bytes"}),
    pytest.param(
        "hat",
        {"cloud-only", "u-shape", "sd-tokens", "hat"},
        {"ttft_p50_s", "ttft_p95_s", "tbt_p50_s", "tbt_p95_s", "acceptance_rate"}
        | {"bytes_per_token", "cloud_compute_s_per_token", "greedy_matches_full"},
    ),
    pytest.param(  # starts a real control plane: e2e tier
        "operator",
        {"edgeloom-operator"},
        {"children_p99_s", "status_p99_s", "peak_memory_bytes", "errors"},
        marks=pytest.mark.e2e,
    ),
]


def test_every_registered_benchmark_has_a_smoke_run() -> None:
    assert set(benchmark_names()) == {entry.values[0] for entry in SMOKE}


@pytest.mark.parametrize(("name", "methods", "metrics"), SMOKE)
def test_quick_benchmark_writes_json_and_png(
    tmp_path: Path, name: str, methods: set[str], metrics: set[str]
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeloom.cli.main",
            "bench",
            name,
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _check_shape(tmp_path / f"{name}.json", name, methods, metrics)
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    for case in data["cases"]:
        for figures in case["results"].values():
            for metric in metrics:
                value = figures[metric]
                assert value is None or value >= 0
    if name == "prunejob":
        quality = {c["params"]["model"]: set(c["results"]["comp"]) for c in data["cases"]}
        assert "perplexity" in quality["tiny-llama"]
        assert {"embedding_fidelity", "retrieval_accuracy"} <= quality["minilm"]
    if name == "splittraining":
        (case,) = data["cases"]
        assert (case["params"]["workers"], case["params"]["workers_per_round"]) == (20, 10)
        assert case["params"]["seeds"] == [0, 1]
        for figures in case["results"].values():
            assert len(figures["final_accuracy_by_seed"]) == 2
    if name == "operator":
        for case in data["cases"]:
            figures = case["results"]["edgeloom-operator"]
            assert figures["errors"] == 0
            assert len(figures["children_latencies_s"]) == case["params"]["resources"]
    if name == "hat":
        (case,) = data["cases"]
        results = case["results"]
        assert {m: f["greedy_matches_full"] for m, f in results.items()} == dict.fromkeys(
            results, 1
        )
        hat, u_shape, sd = results["hat"], results["u-shape"], results["sd-tokens"]
        assert u_shape["acceptance_rate"] is None and 0 < hat["acceptance_rate"] <= 1
        assert results["cloud-only"]["acceptance_rate"] is None and sd["acceptance_rate"] > 0
        assert hat["ttft_p50_s"] > 0 and u_shape["tbt_p50_s"] > 0
        assert sd["bytes_per_token"] < hat["bytes_per_token"]  # ids, not hidden states
