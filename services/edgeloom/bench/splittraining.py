"""``edgeloom bench splittraining``: MergeSFL against SplitFed, split learning and FedAvg.

Every method trains on the same data, partition, seed, worker device profiles and round
budget, through the real role code over a real nats-server (roles run in-process, see
:func:`edgeloom.local.runner.run_in_process`), and is reported in virtual device time. Each
method, baselines and ablations alike, gets the same grid of learning rate x momentum and its
best final accuracy is reported (momentum matters: it makes the methods that step one model on
one skewed worker batch after another collapse). Target accuracies are fixed per case
before any run.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from edgeloom.api.registry import kind_info
from edgeloom.api.resource import API_VERSION, parse_resource
from edgeloom.bench.results import RESULTS_DIR, BenchResult
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
    """Train one configuration to the end; returns its per-round history."""
    import torch

    from edgeloom.local.runner import run_in_process

    torch.set_num_threads(1)
    logging.getLogger("edgeloom").setLevel(logging.WARNING)
    info = kind_info("SplitTrainingJob")
    res = parse_resource(obj, info.spec_model, info.kind)
    res.metadata.uid = str(uuid.uuid4())
    history = asyncio.run(run_in_process(info, res, url)).history
    last = history[-1]
    print(
        f"  {label}: accuracy {last['accuracy']:.3f} after {last['round']} rounds, "
        f"{last['virtual_time_seconds']:.0f} s virtual",
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


def _best(runs: dict[Setting, list[dict[str, Any]]]) -> Setting:
    return max(runs, key=lambda k: (runs[k][-1]["accuracy"], -runs[k][-1]["virtual_time_seconds"]))


def run(quick: bool = False, out_dir: Path = RESULTS_DIR) -> BenchResult:
    """Run every case and method; write ``splittraining.json`` and ``splittraining.png``."""
    cases = ["mnist1d-dirichlet-0.1"] if quick else list(CASES)
    rounds = 3 if quick else 40
    grid = ((0.05, 0.9),) if quick else GRID
    methods = (
        {"mergesfl": METHODS["mergesfl"], "fedavg": METHODS["fedavg"]}
        if quick
        else {**METHODS, **ABLATIONS}
    )
    result = BenchResult(
        "splittraining", "edgeloom bench splittraining" + (" --quick" if quick else "")
    )
    curves: dict[str, dict[str, list[dict[str, Any]]]] = {}
    parallel = max(1, min(2, os.cpu_count() or 1))
    with NatsServer() as server, ProcessPoolExecutor(parallel) as pool:
        for case in cases:
            print(f"{case}: {len(methods) * len(grid)} runs", flush=True)
            futures = {
                (m, k): pool.submit(
                    run_one, server.url, resource(case, o, k, rounds), f"{m} lr={k[0]} m={k[1]}"
                )
                for m, o in methods.items()
                for k in grid
            }
            runs = {m: {k: futures[(m, k)].result() for k in grid} for m in methods}
            chosen = {m: _best(runs[m]) for m in methods}
            target = CASES[case]["target_accuracy"]
            results = {}
            for m in methods:
                results[m] = summarise(runs[m][chosen[m]], target)
                results[m]["learning_rate"], results[m]["momentum"] = chosen[m]
                results[m]["final_accuracy_by_setting"] = {
                    f"lr={k[0]},momentum={k[1]}": runs[m][k][-1]["accuracy"] for k in grid
                }
            params = {
                "workers": sum(g["count"] for g in WORKERS),
                "seed": 0,
                "rounds": rounds,
                "iterations_per_round": 20,
                "total_batch_size": 320,
                "target_accuracy": target,
                "grid_learning_rate_momentum": [list(k) for k in grid],
                "dataset": CASES[case]["dataset"],
                "partition": CASES[case]["partition"],
                "worker_groups": WORKERS,
            }
            result.add_case(case, params, results)
            curves[case] = {m: runs[m][chosen[m]] for m in methods}
    result.write(out_dir)
    plot(result, curves, out_dir / "splittraining.png")
    return result


def plot(
    result: BenchResult, curves: dict[str, dict[str, list[dict[str, Any]]]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, case in zip(axes[0], result.cases, strict=True):
        for method, history in curves[case["case"]].items():
            style = "--" if method.startswith("mergesfl-") else "-"
            ax.plot(
                [h["virtual_time_seconds"] for h in history],
                [h["accuracy"] for h in history],
                style,
                label=method,
            )
        ax.axhline(case["params"]["target_accuracy"], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(case["case"])
        ax.set_xlabel("virtual device time (s, log)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
