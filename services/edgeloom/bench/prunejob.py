"""``edgeloom bench prunejob``: COMP against LLM-Pruner, FLAP, magnitude and ShortGPT.

Every method prunes the same model with the same calibration data and is measured on the same
held-out data, at 10 %, 20 % and 30 % of the transformer blocks' parameters, on both offline
models: edgeloom's tiny Llama (held-out perplexity on the Python standard library) and the
pretrained all-MiniLM-L6-v2 (embedding fidelity to the unpruned encoder and top-1 retrieval
accuracy on held-out docstring pairs). Each run is its own process
(:mod:`edgeloom.bench.prune_case`), so wall time and peak memory belong to that method alone.
None of the methods fine-tunes afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgeloom.api.kinds.prunejob import PruneJobSpec
from edgeloom.apps.comp.inputs import prepare
from edgeloom.bench.results import RESULTS_DIR, BenchResult
from edgeloom.models.sentence_encoder import minilm_path
from edgeloom.models.tiny_llama import build_tiny_llama

METHODS = ("comp", "llm-pruner", "flap", "magnitude", "shortgpt")
RATIOS = (0.1, 0.2, 0.3)
CALIBRATION = {"tiny-llama": {"samples": 64, "sequenceLength": 128}, "minilm": {"samples": 128}}
EVALUATION = {"tiny-llama": 128, "minilm": 512}
HEADLINE = {"tiny-llama": "perplexity", "minilm": "retrieval_accuracy"}


def spec(model: str, folder: Path, method: str, ratio: float, quick: bool) -> PruneJobSpec:
    calibration = dict(CALIBRATION[model])
    if quick:
        calibration["samples"] = 16
    return PruneJobSpec.model_validate(
        {
            "method": method,
            "model": {"path": str(folder)},
            "ratio": ratio,
            "calibration": calibration,
            "evaluation": {"samples": 32 if quick else EVALUATION[model]},
        }
    )


def prune_in_subprocess(job: PruneJobSpec, folder: Path) -> dict[str, Any]:
    """Run :mod:`edgeloom.bench.prune_case` and return its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "edgeloom.bench.prune_case", job.model_dump_json(), str(folder)],
        capture_output=True,
        text=True,
        # Tensors of 64 KiB and more get their own mapping and go back to the kernel when freed,
        # so resident memory follows live memory instead of the allocator's cached heap.
        env={**os.environ, "TQDM_DISABLE": "1", "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{job.method.value} at {job.ratio} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, out_dir: Path = RESULTS_DIR) -> BenchResult:
    folders = {
        "tiny-llama": build_tiny_llama("quick" if quick else "standard"),
        "minilm": minilm_path(),
    }
    methods = ("comp", "llm-pruner") if quick else METHODS
    ratios = (0.2,) if quick else RATIOS
    result = BenchResult("prunejob", "edgeloom bench prunejob" + (" --quick" if quick else ""))
    total, done = len(folders) * len(ratios) * len(methods), 0
    for model, folder in folders.items():
        dense_job = spec(model, folder, "comp", 0.1, quick)
        inputs = prepare(dense_job, folder)
        dense = inputs.measure(inputs.model).values
        params = sum(p.numel() for p in inputs.model.parameters())
        block_params = inputs.view.block_parameters()
        del inputs
        for ratio in ratios:
            figures: dict[str, dict[str, Any]] = {}
            for method in methods:
                job = spec(model, folder, method, ratio, quick)
                figures[method] = prune_in_subprocess(job, folder)
                done += 1
                headline = HEADLINE[model]
                print(
                    f"[{done}/{total}] {model} ratio {ratio} {method}: "
                    f"{headline} {figures[method][headline]:.4g}, "
                    f"{figures[method]['wall_s']:.1f} s, "
                    f"{figures[method]['peak_memory_bytes'] / 2**20:.1f} MiB",
                    file=sys.stderr,
                )
            result.add_case(
                f"{model}-{round(ratio * 100)}",
                {
                    "model": model,
                    "ratio": ratio,
                    "params_before": params,
                    "block_params_before": block_params,
                    "calibration_samples": dense_job.calibration.samples,
                    "evaluation_samples": dense_job.evaluation.samples,
                    **{f"dense_{name}": value for name, value in dense.items()},
                },
                figures,
            )
    result.write(out_dir)
    plot(result, out_dir / "prunejob.png")
    return result


def plot(result: BenchResult, path: Path) -> None:
    """Quality against ratio per model and metric, and peak memory at 20 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tiny-llama", "perplexity", "held-out perplexity (lower is better)"),
        ("minilm", "retrieval_accuracy", "retrieval accuracy (top-1)"),
        ("minilm", "embedding_fidelity", "embedding fidelity (cosine to dense)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.5))
    for ax, (model, metric, label) in zip(axes, panels, strict=False):
        cases = [c for c in result.cases if c["params"]["model"] == model]
        if not cases:
            continue
        for method in cases[0]["results"]:
            ax.plot(
                [c["params"]["ratio"] for c in cases],
                [c["results"][method][metric] for c in cases],
                marker="o",
                label=method,
            )
        ax.axhline(cases[0]["params"][f"dense_{metric}"], color="grey", ls="--", label="dense")
        if metric == "perplexity":
            ax.set_yscale("log")
        ax.set(title=f"{model}: {label}", xlabel="pruning ratio (block parameters)")
        ax.legend(fontsize=8)
    memory = axes[3]
    at_20 = [c for c in result.cases if abs(c["params"]["ratio"] - 0.2) < 1e-9]
    width = 0.8 / max(len(at_20), 1)
    for k, case in enumerate(at_20):
        methods = list(case["results"])
        memory.bar(
            [i + k * width for i in range(len(methods))],
            [case["results"][m]["peak_memory_bytes"] / 2**20 for m in methods],
            width,
            label=case["params"]["model"],
        )
        memory.set_xticks([i + width * (len(at_20) - 1) / 2 for i in range(len(methods))], methods)
    memory.set(title="peak memory of pruning at 20 % (MiB above loaded model)", ylabel="MiB")
    memory.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
