"""``edgeloom bench prunejob``: COMP against LLM-Pruner, FLAP, magnitude and ShortGPT.

Every method prunes the same model with the same calibration data and is measured on the same
held-out data, at 10 %, 20 % and 30 % of the transformer blocks' parameters, on both offline
models: edgeloom's tiny Llama (held-out perplexity on the Python standard library) and the
pretrained all-MiniLM-L6-v2 (embedding fidelity to the unpruned encoder and top-1 retrieval
accuracy on held-out docstring pairs). Each run is a PruneJob handed to the local runner as
``edgeloom run`` does (:mod:`edgeloom.bench.jobs`), so its ``pruner`` role is a process of its
own and its memory and time are that method's alone; every figure comes from the job's result.
None of the methods fine-tunes afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloom.api.messages import JobResult
from edgeloom.api.resource import API_VERSION
from edgeloom.bench.harness import Benchmark, Case, CaseResult
from edgeloom.bench.jobs import environment, run_job
from edgeloom.bench.plot import MiB, grouped_bars, method_lines, panels
from edgeloom.bench.registry import benchmark
from edgeloom.bench.results import BenchResult, Figures
from edgeloom.local.nats_server import NatsServer
from edgeloom.models.sentence_encoder import minilm_path
from edgeloom.models.tiny_llama import build_tiny_llama

if TYPE_CHECKING:
    from matplotlib.axes import Axes

METHODS = ("comp", "llm-pruner", "flap", "magnitude", "shortgpt")
RATIOS = (0.1, 0.2, 0.3)
MODELS = ("tiny-llama", "minilm")
CALIBRATION = {"tiny-llama": {"samples": 64, "sequenceLength": 128}, "minilm": {"samples": 128}}
EVALUATION = {"tiny-llama": 128, "minilm": 512}
QUALITY = {"tiny-llama": ("perplexity",), "minilm": ("embedding_fidelity", "retrieval_accuracy")}
"""Quality figures per model, the headline (what the job's status reports) first."""

ROLE_ENV = {
    "TQDM_DISABLE": "1",
    # Tensors of 64 KiB and more get their own mapping and go back to the kernel when freed,
    # so resident memory follows live memory instead of the allocator's cached heap.
    "MALLOC_MMAP_THRESHOLD_": "65536",
}
"""Set for the role processes the runner starts (they inherit this process's environment)."""


def prunejob(name: str, folder: Path, case: Case, method: str) -> dict[str, Any]:
    """The PruneJob resource of one run, as a user would write it."""
    p = case.params
    return {
        "apiVersion": API_VERSION,
        "kind": "PruneJob",
        "metadata": {"name": name},
        "spec": {
            "method": method,
            "model": {"path": str(folder)},
            "ratio": p["ratio"],
            "calibration": {**CALIBRATION[p["model"]], "samples": p["calibration_samples"]},
            "evaluation": {"samples": p["evaluation_samples"]},
        },
    }


def figures(result: JobResult, model: str) -> Figures:
    """One method's figures, read from its PruneJob's result summary.

    ``peak_rss_bytes`` is the pruner process's peak resident memory (the job's
    ``status.peakMemoryBytes``); ``peak_memory_bytes``, the peak of the pruning step alone above
    the loaded model and data, is there when the role reports ``prune_peak_memory_bytes``.
    """
    s = result.summary
    out: Figures = {m: _quality(result, m, "after") for m in QUALITY[model]}
    out |= {
        "params": s["params_after"],
        "block_params": s["block_params_after"],
        "achieved_ratio": 1 - _number(s["block_params_after"]) / _number(s["block_params_before"]),
        "removed_layers": [int(i) for i in str(s["removed_layers"]).split(",") if i.isdigit()],
        "wall_s": s["prune_wall_s"],
        "peak_rss_bytes": s["peak_memory_bytes"],
    }
    if s.get("prune_peak_memory_bytes") is not None:
        out["peak_memory_bytes"] = s["prune_peak_memory_bytes"]
    return out


def dense_figures(result: JobResult, model: str) -> dict[str, Any]:
    """The unpruned model's size and quality, from any of a case's results."""
    s = result.summary
    return {
        "params_before": s["params_before"],
        "block_params_before": s["block_params_before"],
        **{f"dense_{m}": _quality(result, m, "before") for m in QUALITY[model]},
    }


def _quality(result: JobResult, metric: str, when: str) -> Any:
    """The headline is ``quality_<when>``; the other quality figures ``<metric>_<when>``."""
    if metric == result.metric_name:
        return result.summary[f"quality_{when}"]
    return result.summary.get(f"{metric}_{when}")


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number in the job's summary, got {value!r}")
    return float(value)


@dataclass
class Session:
    """One nats-server for every run, and the model folders, each built on first use."""

    server: NatsServer
    quick: bool
    folders: dict[str, Path] = field(default_factory=dict)

    def folder(self, model: str) -> Path:
        if model not in self.folders:
            tiny = "quick" if self.quick else "standard"
            self.folders[model] = build_tiny_llama(tiny) if model == "tiny-llama" else minilm_path()
        return self.folders[model]


@benchmark("prunejob")
class PruneJobBenchmark(Benchmark[Session]):
    """COMP against LLM-Pruner, FLAP, magnitude and ShortGPT at 10/20/30 % on two models."""

    kinds = ("PruneJob",)

    def cases(self) -> list[Case]:
        ratios = (0.2,) if self.quick else RATIOS
        return [
            Case(
                f"{model}-{round(ratio * 100)}",
                {
                    "model": model,
                    "ratio": ratio,
                    "calibration_samples": 16 if self.quick else CALIBRATION[model]["samples"],
                    "evaluation_samples": 32 if self.quick else EVALUATION[model],
                },
            )
            for model in MODELS
            for ratio in ratios
        ]

    def methods(self) -> list[str]:
        return ["comp", "llm-pruner"] if self.quick else list(METHODS)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with environment(ROLE_ENV), NatsServer() as server:
            yield Session(server, self.quick)

    def run_case(self, case: Case, methods: Sequence[str], session: Session) -> CaseResult:
        model = case.params["model"]
        results: dict[str, Figures] = {}
        dense: dict[str, Any] = {}
        for method in methods:
            job = prunejob(f"bench-{case.name}-{method}", session.folder(model), case, method)
            result = run_job(job, session.server.url)
            results[method] = figures(result, model)
            dense = dense or dense_figures(result, model)
            headline = QUALITY[model][0]
            print(
                f"  {method}: {headline} {results[method][headline]:.4g}, "
                f"{results[method]['wall_s']:.1f} s, "
                f"peak {results[method]['peak_rss_bytes'] / MiB:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
        return CaseResult(results, params=dense)

    def plot(self, result: BenchResult, path: Path) -> None:
        """Quality against ratio per model and metric, and peak memory at 20 %."""
        quality_panels = [
            ("tiny-llama", "perplexity", "held-out perplexity (lower is better)"),
            ("minilm", "retrieval_accuracy", "retrieval accuracy (top-1)"),
            ("minilm", "embedding_fidelity", "embedding fidelity (cosine to dense)"),
        ]
        with panels(path, 4, (5.5, 4.5)) as axes:
            for ax, (model, metric, label) in zip(axes, quality_panels, strict=False):
                cases = [c for c in result.cases if c["params"]["model"] == model]
                if not cases:
                    continue
                method_lines(
                    ax,
                    {
                        m: (
                            [c["params"]["ratio"] for c in cases],
                            [c["results"][m][metric] for c in cases],
                        )
                        for m in cases[0]["results"]
                    },
                    marker="o",
                )
                dense = cases[0]["params"].get(f"dense_{metric}")
                if dense is not None:
                    ax.axhline(dense, color="grey", ls="--", label="dense")
                    ax.legend(fontsize=8)
                if metric == "perplexity":
                    ax.set_yscale("log")
                ax.set(title=f"{model}: {label}", xlabel="pruning ratio (block parameters)")
            self._plot_memory(axes[3], result)

    @staticmethod
    def _plot_memory(ax: Axes, result: BenchResult) -> None:
        at_20 = [c for c in result.cases if abs(c["params"]["ratio"] - 0.2) < 1e-9]
        if not at_20:
            return
        methods = list(at_20[0]["results"])
        step_only = all("peak_memory_bytes" in f for c in at_20 for f in c["results"].values())
        metric = "peak_memory_bytes" if step_only else "peak_rss_bytes"
        grouped_bars(
            ax,
            methods,
            {c["params"]["model"]: [c["results"][m][metric] / MiB for m in methods] for c in at_20},
        )
        what = (
            "of the pruning step above the loaded model" if step_only else "of the pruner process"
        )
        ax.set(title=f"peak memory {what} at 20 % (MiB)", ylabel="MiB")
