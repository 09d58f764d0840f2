"""``edgeloom bench splittraining``: MergeSFL against SplitFed, split learning and FedAvg.

Every method trains on the same data, partition, seed, worker device profiles and round
budget, through the real role code over a real nats-server (each run is a SplitTrainingJob
handed to the local runner in-process, as ``edgeloom run --in-process`` does: see
:mod:`edgeloom.bench.jobs`), and is reported in virtual device time. Each
method, baselines and ablations alike, gets the same grid of learning rate x momentum and its
best final accuracy is reported (momentum matters: it makes the methods that step one model on
one skewed worker batch after another collapse). Target accuracies are fixed per case
before any run.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloom.api.resource import API_VERSION
from edgeloom.bench.harness import Benchmark, Case, CaseResult
from edgeloom.bench.jobs import run_job
from edgeloom.bench.plot import method_lines, panels
from edgeloom.bench.registry import benchmark
from edgeloom.bench.results import BenchResult, Figures
from edgeloom.local.nats_server import NatsServer

WORKERS = [  # ten heterogeneous workers: three Jetson-like device classes
    {
        "name": "nano",
        "count": 4,
        "profile": {
            "computeSlowdown": 4.0,
            "uplinkBytesPerSecond": 2e6,
            "downlinkBytesPerSecond": 8e6,
            "rttSeconds": 0.02,
        },
    },
    {
        "name": "tx2",
        "count": 3,
        "profile": {
            "computeSlowdown": 2.0,
            "uplinkBytesPerSecond": 5e6,
            "downlinkBytesPerSecond": 2e7,
            "rttSeconds": 0.01,
        },
    },
    {
        "name": "agx",
        "count": 3,
        "profile": {
            "computeSlowdown": 1.0,
            "uplinkBytesPerSecond": 1.25e7,
            "downlinkBytesPerSecond": 5e7,
            "rttSeconds": 0.005,
        },
    },
]
CASES: dict[str, dict[str, Any]] = {
    "mnist1d-dirichlet-0.1": {
        "model": {"architecture": "cnn1d"},
        "dataset": {"name": "mnist1d", "samples": 5000},
        "partition": {"scheme": "dirichlet", "alpha": 0.1},
        "target_accuracy": 0.6,
    },
    "mnist1d-dominant-0.8": {
        "model": {"architecture": "cnn1d"},
        "dataset": {"name": "mnist1d", "samples": 5000},
        "partition": {"scheme": "dominant-class", "dominantRatio": 0.8},
        "target_accuracy": 0.6,
    },
    "digits-dirichlet-0.1": {
        "model": {"architecture": "digits-cnn"},
        "dataset": {"name": "digits"},
        "partition": {"scheme": "dirichlet", "alpha": 0.1},
        "target_accuracy": 0.85,
    },
}
METHODS: dict[str, dict[str, Any]] = {
    "mergesfl": {"method": "mergesfl"},
    "splitfed": {"method": "splitfed"},
    "sfl": {"method": "sfl"},
    "fedavg": {"method": "fedavg"},
}
ABLATIONS: dict[str, dict[str, Any]] = {
    "mergesfl-no-merging": {"method": "mergesfl", "ablation": {"featureMerging": False}},
    "mergesfl-no-regulation": {"method": "mergesfl", "ablation": {"batchRegulation": False}},
}
GRID: tuple[tuple[float, float], ...] = ((0.05, 0.0), (0.1, 0.0), (0.05, 0.9), (0.1, 0.9))
"""(learning rate, momentum) settings every method is tuned over."""


def resource(
    case: str, overrides: dict[str, Any], setting: tuple[float, float], rounds: int
) -> dict[str, Any]:
    """The SplitTrainingJob a run uses."""
    c = CASES[case]
    spec = {
        "model": c["model"],
        "dataset": c["dataset"],
        "partition": c["partition"],
        "workers": WORKERS,
        "training": {
            "rounds": rounds,
            "iterationsPerRound": 20,
            "totalBatchSize": 320,
            "minBatchSize": 8,
            "maxBatchSize": 96,
            "learningRate": setting[0],
            "momentum": setting[1],
            "seed": 0,
        },
        "participation": {"minWorkers": 5, "roundDeadlineSeconds": 120},
        "checkpointInterval": 1000,
        **copy.deepcopy(overrides),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "SplitTrainingJob",
        "metadata": {"name": f"bench-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }


def run_one(url: str, obj: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """Train one configuration to the end, in-process as ``edgeloom run --in-process`` does;
    returns its per-round history."""
    import torch

    torch.set_num_threads(1)
    logging.getLogger("edgeloom").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="edgeloom-bench-") as runs:
        history = run_job(obj, url, Path(runs), in_process=True).history
    last = history[-1]
    print(
        f"  {label}: accuracy {last['accuracy']:.3f} after {last['round']} rounds, "
        f"{last['virtual_time_seconds']:.0f} s virtual",
        file=sys.stderr,
        flush=True,
    )
    return history


def summarise(history: list[dict[str, Any]], target: float) -> dict[str, Any]:
    reached = next((h["virtual_time_seconds"] for h in history if h["accuracy"] >= target), None)
    return {
        "final_accuracy": history[-1]["accuracy"],
        "best_accuracy": max(h["accuracy"] for h in history),
        "time_to_target_s": reached,
        "virtual_time_s": history[-1]["virtual_time_seconds"],
        "bytes_total": history[-1]["bytes_total"],
        "rounds": len(history),
    }


Setting = tuple[float, float]
History = list[dict[str, Any]]


def _best(runs: dict[Setting, History]) -> Setting:
    return max(runs, key=lambda k: (runs[k][-1]["accuracy"], -runs[k][-1]["virtual_time_seconds"]))


@dataclass
class Session:
    """One nats-server for every run, and at most two runs at a time (one process each)."""

    server: NatsServer
    pool: ProcessPoolExecutor


@benchmark("splittraining")
class SplitTrainingBenchmark(Benchmark[Session]):
    """MergeSFL against SplitFed, split learning and FedAvg (and MergeSFL's ablations)."""

    kinds = ("SplitTrainingJob",)

    @property
    def rounds(self) -> int:
        return 3 if self.quick else 40

    @property
    def grid(self) -> tuple[Setting, ...]:
        return ((0.05, 0.9),) if self.quick else GRID

    def cases(self) -> list[Case]:
        names = ["mnist1d-dirichlet-0.1"] if self.quick else list(CASES)
        return [
            Case(
                name,
                {
                    "workers": sum(g["count"] for g in WORKERS),
                    "seed": 0,
                    "rounds": self.rounds,
                    "iterations_per_round": 20,
                    "total_batch_size": 320,
                    "target_accuracy": CASES[name]["target_accuracy"],
                    "grid_learning_rate_momentum": [list(k) for k in self.grid],
                    "dataset": CASES[name]["dataset"],
                    "partition": CASES[name]["partition"],
                    "worker_groups": WORKERS,
                },
            )
            for name in names
        ]

    def methods(self) -> list[str]:
        return ["mergesfl", "fedavg"] if self.quick else [*METHODS, *ABLATIONS]

    @contextmanager
    def session(self) -> Iterator[Session]:
        parallel = max(1, min(2, os.cpu_count() or 1))
        with NatsServer() as server, ProcessPoolExecutor(parallel) as pool:
            yield Session(server, pool)

    def run_case(self, case: Case, methods: Sequence[str], session: Session) -> CaseResult:
        overrides = {**METHODS, **ABLATIONS}
        futures = {
            (m, k): session.pool.submit(
                run_one,
                session.server.url,
                resource(case.name, overrides[m], k, self.rounds),
                f"{m} lr={k[0]} m={k[1]}",
            )
            for m in methods
            for k in self.grid
        }
        runs = {m: {k: futures[(m, k)].result() for k in self.grid} for m in methods}
        results: dict[str, Figures] = {}
        curves: dict[str, History] = {}
        for m in methods:
            chosen = _best(runs[m])
            curves[m] = runs[m][chosen]
            results[m] = summarise(curves[m], case.params["target_accuracy"])
            results[m]["learning_rate"], results[m]["momentum"] = chosen
            results[m]["final_accuracy_by_setting"] = {
                f"lr={k[0]},momentum={k[1]}": runs[m][k][-1]["accuracy"] for k in self.grid
            }
        return CaseResult(results, plot_data=curves)

    def plot(
        self, result: BenchResult, plot_data: dict[str, dict[str, History]], path: Path
    ) -> None:
        """Test accuracy against virtual device time, one panel per case."""
        with panels(path, len(result.cases)) as axes:
            for ax, case in zip(axes, result.cases, strict=True):
                curves = plot_data[case["case"]]
                method_lines(
                    ax,
                    {
                        m: (
                            [h["virtual_time_seconds"] for h in history],
                            [h["accuracy"] for h in history],
                        )
                        for m, history in curves.items()
                    },
                    dashed=list(ABLATIONS),
                )
                ax.axhline(case["params"]["target_accuracy"], color="grey", lw=0.8, ls=":")
                ax.set_xscale("log")
                ax.set(
                    title=case["case"],
                    xlabel="virtual device time (s, log)",
                    ylabel="test accuracy",
                )
