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
import statistics
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
from edgeloom.bench.plot import method_bands, panels
from edgeloom.bench.registry import benchmark
from edgeloom.bench.results import BenchResult, Figures, comparable_spec
from edgeloom.local.nats_server import NatsServer
from edgeloom.local.runner import RunFailed, load_and_validate

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


def worker_count(groups: list[dict[str, Any]]) -> int:
    return sum(g["count"] for g in groups)


def pool(copies: int) -> list[dict[str, Any]]:
    """``copies`` x the ten workers above (N = 10 x copies), the same three device classes."""
    return [{**copy.deepcopy(g), "count": g["count"] * copies} for g in WORKERS]


MNIST1D = {"model": {"architecture": "cnn1d"}, "dataset": {"name": "mnist1d", "samples": 5000}}
PARTITIONS: dict[str, tuple[dict[str, Any], float]] = {  # partition, target fixed before runs
    "dirichlet-0.1": ({"scheme": "dirichlet", "alpha": 0.1}, 0.6),
    "dirichlet-0.5": ({"scheme": "dirichlet", "alpha": 0.5}, 0.75),
    "dominant-0.4": ({"scheme": "dominant-class", "dominantRatio": 0.4}, 0.75),
    "dominant-0.8": ({"scheme": "dominant-class", "dominantRatio": 0.8}, 0.6),
}
WORKERS_PER_ROUND = 10
CASES: dict[str, dict[str, Any]] = {
    **{
        f"mnist1d-{partition}-10of{10 * copies}": {
            **MNIST1D,
            "partition": scheme,
            "workers": pool(copies),
            "target_accuracy": target,
            "rounds": 40,
        }
        for copies in (2, 4)
        for partition, (scheme, target) in PARTITIONS.items()
    },
    # the paper's regime: a bottom model whose weights outweigh its features (AlexNet-style
    # CNN split after its conv stack, as the official code does for CIFAR-10)
    "fashion-mnist-alexnet-dirichlet-0.1-10of20": {
        "model": {"architecture": "cifar-alexnet"},
        "dataset": {"name": "fashion-mnist", "samples": 6000},
        "partition": {"scheme": "dirichlet", "alpha": 0.1},
        "workers": pool(2),
        "target_accuracy": 0.6,
        "rounds": 20,
    },
}
"""The issue's cases: K = 10 of N = 20 and 40 workers, Dirichlet 0.1/0.5 and dominant-class
0.4/0.8, and one case in the paper's model regime. Targets are fixed here, before any run."""
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "splittraining-mnist1d.yaml"
"""``edgeloom run``'s first example: its own case (``example``), run exactly as the file says
(its learning rate, momentum and stop), so the run can print how the methods did on it."""
SEEDS = (0, 1, 2)
"""Every case runs every method on these seeds (data partition, initial weights, sampling);
the settings are tuned on the first alone."""

METHODS: dict[str, dict[str, Any]] = {
    "mergesfl": {"method": "mergesfl"},
    "splitfed": {"method": "splitfed"},
    "sfl": {"method": "sfl"},
    "fedavg": {"method": "fedavg"},
}
ABLATIONS: dict[str, dict[str, Any]] = {
    "mergesfl-regulation": {"method": "mergesfl", "ablation": {"jointBatchSizing": False}},
    "mergesfl-no-merging": {"method": "mergesfl", "ablation": {"featureMerging": False}},
    "mergesfl-no-regulation": {"method": "mergesfl", "ablation": {"batchRegulation": False}},
}
OVERRIDES = {**METHODS, **ABLATIONS}
"""What each method changes in a case's spec."""
GRID: tuple[tuple[float, float], ...] = ((0.05, 0.0), (0.1, 0.0), (0.05, 0.9), (0.1, 0.9))
"""(learning rate, momentum) settings every method is tuned over, on the first seed."""

Setting = tuple[float, float]
History = list[dict[str, Any]]


def case_spec(case: str, setting: Setting, rounds: int) -> dict[str, Any]:
    """The spec every method of ``case`` shares (``method`` and ``seed`` aside)."""
    c = CASES[case]
    return {
        "model": c["model"],
        "dataset": c["dataset"],
        "partition": c["partition"],
        "workers": c["workers"],
        "training": {
            "rounds": rounds,
            "iterationsPerRound": 20,
            "totalBatchSize": 320,
            "minBatchSize": 8,
            "maxBatchSize": 96,
            "learningRate": setting[0],
            "momentum": setting[1],
            "workersPerRound": WORKERS_PER_ROUND,
            "seed": 0,
        },
        "stop": {"targetAccuracy": c["target_accuracy"], "stopAtTarget": False},
        "participation": {"minWorkers": 5, "roundDeadlineSeconds": 120},
        "checkpointInterval": 1000,
        "emulation": "modelled",
    }


def example_spec() -> dict[str, Any]:
    """The first example's validated spec, as :func:`comparable_spec` records it."""
    _, example = load_and_validate(EXAMPLE)
    return comparable_spec(example.spec.to_wire())


def resource(spec: dict[str, Any], overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """The SplitTrainingJob of one run: ``spec`` with a method's overrides and ``seed``."""
    run = {**copy.deepcopy(spec), **copy.deepcopy(overrides)}
    run["training"]["seed"] = seed
    return {
        "apiVersion": API_VERSION,
        "kind": "SplitTrainingJob",
        "metadata": {"name": f"bench-{uuid.uuid4().hex[:8]}"},
        "spec": run,
    }


def run_one(url: str, obj: dict[str, Any], label: str) -> History | None:
    """Train one configuration to the end, in-process as ``edgeloom run --in-process`` does;
    returns its per-round history, or None when the run failed (a setting that diverges until
    no worker is left), which is printed with its reason."""
    import torch

    torch.set_num_threads(1)
    logging.getLogger("edgeloom").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="edgeloom-bench-") as runs:
        try:
            history = run_job(obj, url, Path(runs), in_process=True).history
        except RunFailed as failed:
            print(f"  {label}: failed: {failed.reason}", file=sys.stderr, flush=True)
            return None
    last = history[-1]
    print(
        f"  {label}: accuracy {last['accuracy']:.3f} after {last['round']} rounds, "
        f"{last['virtual_time_seconds']:.0f} s virtual",
        file=sys.stderr,
        flush=True,
    )
    return history


def time_to_target(history: History, target: float) -> float | None:
    """Virtual seconds at the first round whose accuracy reaches ``target``; None: never."""
    return next((h["virtual_time_seconds"] for h in history if h["accuracy"] >= target), None)


def accuracy_at(history: History, budget_s: float) -> float:
    """Accuracy of the last round finished within ``budget_s`` virtual seconds (0 when none
    is: the method had nothing to show by then)."""
    within = [h["accuracy"] for h in history if h["virtual_time_seconds"] <= budget_s]
    return within[-1] if within else 0.0


def learning_curve(history: History) -> list[list[float]]:
    """One run's (virtual seconds, accuracy) per round, as the plot draws it."""
    return [
        [h["virtual_time_seconds"] for h in history],
        [h["accuracy"] for h in history],
    ]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (over the seeds)."""
    return statistics.fmean(values), statistics.pstdev(values)


def seed_figures(histories: Sequence[History], target: float) -> Figures:
    """One method's figures over its seeds' runs: means and standard deviations, and a
    time-to-target only when every seed reaches the target (None otherwise)."""
    finals = [h[-1]["accuracy"] for h in histories]
    times = [time_to_target(h, target) for h in histories]
    final_mean, final_std = mean_std(finals)
    reached = [t for t in times if t is not None]
    return {
        "final_accuracy_mean": final_mean,
        "final_accuracy_std": final_std,
        "final_accuracy_by_seed": finals,
        "time_to_target_s_mean": statistics.fmean(reached) if len(reached) == len(times) else None,
        "time_to_target_s_by_seed": times,
        "virtual_time_s_mean": statistics.fmean(h[-1]["virtual_time_seconds"] for h in histories),
        "bytes_total_mean": statistics.fmean(h[-1]["bytes_total"] for h in histories),
        "rounds_mean": statistics.fmean(len(h) for h in histories),
    }


def add_budget(results: dict[str, Figures], curves: dict[str, list[History]]) -> float:
    """Equal-time figures: the budget is the virtual time the fastest of the four methods
    needs for its run (ablations do not set it); each method's accuracy at that budget, mean
    and std over its seeds, goes into its figures. Returns the budget."""
    budget = min(results[m]["virtual_time_s_mean"] for m in results if m in METHODS)
    for method, histories in curves.items():
        mean, std = mean_std([accuracy_at(h, budget) for h in histories])
        results[method]["accuracy_at_budget_mean"] = mean
        results[method]["accuracy_at_budget_std"] = std
    return budget


def against_baselines(results: dict[str, Figures]) -> dict[str, Any]:
    """MergeSFL against its best baseline, as the paper states its headline (+5.82 to +26.22
    points of final accuracy, 1.74-4.14x time-to-target): the gain over the baseline with the
    best final accuracy, and the speed-up over the baseline fastest to the target (None when
    MergeSFL or every baseline misses it)."""
    baselines = {m: f for m, f in results.items() if m in METHODS and m != "mergesfl"}
    if "mergesfl" not in results or not baselines:
        return {}
    ours = results["mergesfl"]
    best = max(baselines, key=lambda m: baselines[m]["final_accuracy_mean"])
    times = {
        m: f["time_to_target_s_mean"]
        for m, f in baselines.items()
        if f["time_to_target_s_mean"] is not None
    }
    fastest = min(times, key=lambda m: times[m]) if times else None
    ttt = ours["time_to_target_s_mean"]
    return {
        "best_baseline": best,
        "gain_points": 100 * (ours["final_accuracy_mean"] - baselines[best]["final_accuracy_mean"]),
        "fastest_baseline": fastest,
        "speedup": times[fastest] / ttt if fastest is not None and ttt else None,
    }


def _final_accuracy(history: History | None) -> float | None:
    return None if history is None else history[-1]["accuracy"]


def best_setting(runs: dict[Setting, History | None]) -> Setting:
    """The setting with the best final accuracy (ties: the shorter virtual time) among those
    whose run finished (None: it failed)."""
    finished = {k: h for k, h in runs.items() if h is not None}
    if not finished:
        raise RuntimeError(f"every setting of the grid failed: {sorted(runs)}")
    return max(
        finished,
        key=lambda k: (finished[k][-1]["accuracy"], -finished[k][-1]["virtual_time_seconds"]),
    )


@dataclass
class Session:
    """One nats-server for every run, and at most two runs at a time (one process each)."""

    server: NatsServer
    pool: ProcessPoolExecutor

    def run_all(self, runs: dict[Any, tuple[dict[str, Any], str]]) -> dict[Any, History | None]:
        """Every ``key: (resource, label)`` run, two at a time; histories by key (None: the
        run failed)."""
        futures = {
            key: self.pool.submit(run_one, self.server.url, obj, label)
            for key, (obj, label) in runs.items()
        }
        return {key: future.result() for key, future in futures.items()}


@benchmark("splittraining")
class SplitTrainingBenchmark(Benchmark[Session]):
    """MergeSFL against SplitFed, split learning and FedAvg (and MergeSFL's ablations)."""

    kinds = ("SplitTrainingJob",)

    @property
    def seeds(self) -> tuple[int, ...]:
        return SEEDS[:2] if self.quick else SEEDS

    @property
    def grid(self) -> tuple[Setting, ...]:
        return ((0.05, 0.9),) if self.quick else GRID

    def rounds(self, case: str) -> int:
        return 3 if self.quick else int(CASES[case]["rounds"])

    def cases(self) -> list[Case]:
        names = ["mnist1d-dirichlet-0.1-10of20"] if self.quick else list(CASES)
        cases = [
            Case(
                name,
                {
                    "workers": worker_count(CASES[name]["workers"]),
                    "workers_per_round": WORKERS_PER_ROUND,
                    "seeds": list(self.seeds),
                    "rounds": self.rounds(name),
                    "target_accuracy": CASES[name]["target_accuracy"],
                    "grid_learning_rate_momentum": [list(k) for k in self.grid],
                    "dataset": CASES[name]["dataset"],
                    "partition": CASES[name]["partition"],
                    "worker_groups": CASES[name]["workers"],
                },
            )
            for name in names
        ]
        if not self.quick:
            spec = example_spec()
            workers = worker_count(spec["workers"])
            cases.append(
                Case(
                    "example",
                    {
                        "workers": workers,
                        "workers_per_round": spec["training"].get("workersPerRound") or workers,
                        "seeds": list(self.seeds),
                        "rounds": spec["training"]["rounds"],
                        "target_accuracy": spec["stop"]["targetAccuracy"],
                        "spec": spec,
                    },
                )
            )
        return cases

    def methods(self) -> list[str]:
        return ["mergesfl", "fedavg"] if self.quick else list(OVERRIDES)

    @contextmanager
    def session(self) -> Iterator[Session]:
        parallel = max(1, min(2, os.cpu_count() or 1))
        with NatsServer() as server, ProcessPoolExecutor(parallel) as pool:
            yield Session(server, pool)

    def run_case(self, case: Case, methods: Sequence[str], session: Session) -> CaseResult:
        """Tune each method on the first seed over the grid, then run the other seeds at its
        best setting. A case with a ``spec`` of its own (``example``) runs it on every seed."""
        if "spec" in case.params:
            specs = {m: case.params["spec"] for m in methods}
            curves = self._seed_runs(specs, methods, self.seeds, session)
            tuning: dict[str, Figures] = {}
        else:
            specs, tuning, first_runs = self._tune(case.name, methods, session)
            curves = self._seed_runs(specs, methods, self.seeds[1:], session)
            curves = {m: {self.seeds[0]: first_runs[m], **curves[m]} for m in methods}
        target = case.params["target_accuracy"]
        failed = {m: [s for s, h in curves[m].items() if h is None] for m in methods}
        finished = {m: [h for h in curves[m].values() if h is not None] for m in methods}
        if empty := [m for m in methods if not finished[m]]:
            raise RuntimeError(f"every seed's run failed for {empty}")
        results = {
            m: {**seed_figures(finished[m], target), "failed_seeds": failed[m], **tuning.get(m, {})}
            for m in methods
        }
        budget = add_budget(results, finished)
        return CaseResult(
            results,
            params={"budget_s": budget, "mergesfl_vs_best_baseline": against_baselines(results)},
            plot_data={m: [learning_curve(h) for h in finished[m]] for m in methods},
        )

    def _tune(
        self, case: str, methods: Sequence[str], session: Session
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Figures], dict[str, History | None]]:
        """Each method over the grid on the first seed: its best setting's spec, the tuning
        figures (a failed setting's final accuracy is None), and that setting's run (the first
        seed's)."""
        seed, rounds = self.seeds[0], self.rounds(case)
        runs = session.run_all(
            {
                (m, k): (
                    resource(case_spec(case, k, rounds), OVERRIDES[m], seed),
                    f"{m} lr={k[0]} m={k[1]} seed={seed}",
                )
                for m in methods
                for k in self.grid
            }
        )
        chosen = {m: best_setting({k: runs[(m, k)] for k in self.grid}) for m in methods}
        tuning = {
            m: {
                "learning_rate": chosen[m][0],
                "momentum": chosen[m][1],
                "final_accuracy_by_setting": {
                    f"lr={k[0]},momentum={k[1]}": _final_accuracy(runs[(m, k)]) for k in self.grid
                },
            }
            for m in methods
        }
        specs = {m: case_spec(case, chosen[m], rounds) for m in methods}
        return specs, tuning, {m: runs[(m, chosen[m])] for m in methods}

    @staticmethod
    def _seed_runs(
        specs: dict[str, dict[str, Any]],
        methods: Sequence[str],
        seeds: Sequence[int],
        session: Session,
    ) -> dict[str, dict[int, History | None]]:
        runs = session.run_all(
            {
                (m, s): (resource(specs[m], OVERRIDES[m], s), f"{m} seed={s}")
                for m in methods
                for s in seeds
            }
        )
        return {m: {s: runs[(m, s)] for s in seeds} for m in methods}

    def plot(self, result: BenchResult, path: Path) -> None:
        """Test accuracy against virtual device time, mean and std band over the seeds, one
        panel per case that kept its curves (dotted: the case's target; solid grey: the
        equal-time budget); a case recorded before curves were kept has no panel."""
        drawn = [case for case in result.cases if case.get("plot_data")]
        with panels(path, len(drawn), columns=3) as axes:
            for ax, case in zip(axes, drawn, strict=True):
                method_bands(
                    ax,
                    {m: [(xs, ys) for xs, ys in curves] for m, curves in case["plot_data"].items()},
                    dashed=list(ABLATIONS),
                )
                ax.axhline(case["params"]["target_accuracy"], color="grey", lw=0.8, ls=":")
                ax.axvline(case["params"]["budget_s"], color="grey", lw=0.8)
                ax.set_xscale("log")
                ax.set(
                    title=case["case"],
                    xlabel="virtual device time (s, log)",
                    ylabel="test accuracy",
                )
