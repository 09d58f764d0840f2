"""``edgeloom bench hat``: HAT against cloud-only serving, U-shaped split inference and
standard device-cloud speculative decoding, and HAT's ablations.

Every method is a HatInferenceService run by ``edgeloom run`` (:func:`edgeloom.bench.jobs.serve`):
one cloud replica and ``concurrency`` devices, each device a process with the same profile, all
served the same held-out prompts from the Python standard library (short ones as chat turns,
long ones of 512-1024 tokens), greedy. Each device sends its prompts one after another, the
devices at once. Latencies are emulated (the ``edgeloom`` field of each answer: the device's
measured compute x its slowdown, bytes over its links, the cloud's compute x its factor on the
cloud's own clock); ``greedy_matches_full`` checks every answer against the full model's own
greedy decoding (transformers' ``generate``).

Methods:

- ``cloud-only``: the device sends the prompt's token ids and the cloud decodes alone with the
  whole model, each token sent down as it is decided (today's serving);
- ``u-shape``: HAT's split, no speculation, the whole prompt at once: one round trip per token;
- ``sd-tokens``: standard device-cloud speculative decoding: the device drafts with the same
  small model as HAT's (its outer blocks and the adapter, so the draft quality is equal) and
  sends token ids, the cloud verifies with the whole model and answers its greedy choices;
  adaptive draft length, no parallel drafting, the whole prompt at once;
- ``hat``: speculation, adaptive draft length, parallel drafting, adaptive chunked prefill
  starting from ``chunk_size``; and ``hat`` without chunking, without parallel drafting, and
  with a fixed draft length.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from edgeloom.api.resource import API_VERSION
from edgeloom.bench.harness import Benchmark, Case, CaseResult
from edgeloom.bench.jobs import environment, serve
from edgeloom.bench.plot import grouped_bars, panels
from edgeloom.bench.registry import benchmark
from edgeloom.bench.results import BenchResult, Figures
from edgeloom.data.textcorpus import read_texts, stdlib_files
from edgeloom.models.llm import load_model
from edgeloom.models.smollm2 import build_smollm2
from edgeloom.models.tiny_llama import build_tiny_llama

METHODS = (
    "cloud-only",
    "u-shape",
    "sd-tokens",
    "hat",
    "hat-no-chunking",
    "hat-no-parallel-drafting",
    "hat-fixed-gamma",
)
BASELINES = {"cloud-only", "u-shape", "sd-tokens"}
"""Methods that are spec methods of their own; the rest are ``hat`` with settings."""
WHOLE_PROMPT = {"cloud-only", "u-shape", "sd-tokens", "hat-no-chunking"}
MODELS = ("tiny-llama", "smollm2-135m")
PROMPT_KINDS = {"tiny-llama": ("chat",), "smollm2-135m": ("chat", "long")}
"""The tiny Llama's context is 128 positions: no long prompts."""
CONCURRENCY = {"tiny-llama": (1, 4, 16), "smollm2-135m": (1, 4)}
"""Devices at once; SmolLM2 stops at 4 (each device process holds the whole model)."""
DEVICE = {
    "computeSlowdown": 4,
    "uplinkBytesPerSecond": 2_500_000,
    "downlinkBytesPerSecond": 12_500_000,
    "rttSeconds": 0.02,
}
"""A phone-class device on a 20 Mbit/s uplink, 100 Mbit/s downlink and 20 ms RTT."""
CLOUD_FACTOR = 0.25
"""The cloud replica computes 4x faster than this machine (a GPU node)."""
SPLIT = {"tiny-llama": (1, 1), "smollm2-135m": (2, 2)}
ADAPTER_STEPS = {"tiny-llama": 300, "smollm2-135m": 150}
ADAPTER_BATCH = {"tiny-llama": 8, "smollm2-135m": 4}
"""The prepare step's recipe per model (SmolLM2's as measured in docs/systems/hat.md)."""
ROLE_ENV = {"TQDM_DISABLE": "1"}


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 now (devices listen on
    ``port + i`` locally)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65_535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def service(name: str, model: Path, case: Case, method: str, port: int) -> dict[str, Any]:
    """The HatInferenceService of one method, as a user would write it."""
    p = case.params
    inputs, outputs = SPLIT[p["model"]]
    base = method if method in BASELINES else "hat"
    return {
        "apiVersion": API_VERSION,
        "kind": "HatInferenceService",
        "metadata": {"name": name},
        "spec": {
            "method": base,
            "model": {"path": str(model)},
            "split": {"inputLayers": inputs, "outputLayers": outputs},
            "adapter": {
                "kind": "decoder",
                "training": {"steps": p["adapter_steps"], "batchSize": ADAPTER_BATCH[p["model"]]},
            },
            "speculation": {
                "gammaMax": 8,
                "adaptiveGamma": method != "hat-fixed-gamma",
                "parallelDrafting": method not in ("hat-no-parallel-drafting", "sd-tokens"),
                "maxTokens": p["new_tokens"],
                "defaultMaxTokens": p["new_tokens"],
            },
            "chunking": {
                "mode": "off" if method in WHOLE_PROMPT else "adaptive",
                "chunkSize": p["chunk_size"],
            },
            "devices": [
                {"name": "phones", "count": p["concurrency"], "port": port, "profile": DEVICE}
            ],
            "cloud": {"computeFactor": CLOUD_FACTOR},
        },
    }


def prompts(model: str, kind: str, count: int, tokenizer: Any) -> list[str]:
    """``count`` held-out standard-library prompts: ``long`` ones of 512-1024 tokens, ``chat``
    ones a docstring-sized question (as a chat turn for a model with a chat template)."""
    out: list[str] = []
    for text in read_texts(stdlib_files("heldout")):
        ids = tokenizer(text)["input_ids"]
        if kind == "long":
            if len(ids) >= 1024:
                out.append(tokenizer.decode(ids[: 512 + 64 * len(out) % 512]))
        elif len(ids) >= 64:
            question = tokenizer.decode(ids[:48])
            if tokenizer.chat_template:
                turn = [{"role": "user", "content": f"Explain this code:\n{question}"}]
                question = tokenizer.apply_chat_template(
                    turn, add_generation_prompt=True, tokenize=False
                )
            out.append(question)
        if len(out) == count:
            return out
    raise RuntimeError(f"the held-out corpus has fewer than {count} {kind} prompts")


def reference(model: Any, tokenizer: Any, texts: Sequence[str], new_tokens: int) -> list[list[int]]:
    """The full model's own greedy continuation of each prompt (transformers' generate)."""
    import torch

    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            generated = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
            out.append(generated[0, ids.shape[1] :].tolist())
    return out


def ask(url: str, name: str, text: str, new_tokens: int) -> dict[str, Any]:
    """One greedy completion; its emulated figures and token ids."""
    body = {"model": name, "prompt": text, "max_tokens": new_tokens, "temperature": 0}
    answer = httpx.post(f"{url}/completions", json=body, timeout=600)
    if answer.is_error:  # OpenAI's error shape says why
        raise RuntimeError(f"{url}: {answer.status_code} {answer.text}")
    figures: dict[str, Any] = answer.json()["edgeloom"]
    return figures


def ask_all(url: str, name: str, texts: Sequence[str], new_tokens: int) -> list[dict[str, Any]]:
    """One device's prompts, one after another."""
    return [ask(url, name, text, new_tokens) for text in texts]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(answers: Sequence[dict[str, Any]], expected: Sequence[list[int]]) -> Figures:
    """A method's figures over every answer of every device."""
    ttft = [a["ttft_s"] for a in answers if a["ttft_s"] is not None]
    tbt = [a["tbt_s"] for a in answers if a["tbt_s"] is not None]
    tokens = sum(len(a["token_ids"]) for a in answers)
    drafted = sum(a["drafted_tokens"] for a in answers)
    moved = sum(a["uplink_bytes"] + a["downlink_bytes"] for a in answers)
    matches = all(a["token_ids"] == e for a, e in zip(answers, expected, strict=True))
    return {
        "ttft_p50_s": percentile(ttft, 0.5),
        "ttft_p95_s": percentile(ttft, 0.95),
        "tbt_p50_s": percentile(tbt, 0.5),
        "tbt_p95_s": percentile(tbt, 0.95),
        "acceptance_rate": (
            sum(a["accepted_tokens"] for a in answers) / drafted if drafted else None
        ),
        "bytes_per_token": moved / tokens,
        "cloud_compute_s_per_token": sum(a["cloud_compute_s"] for a in answers) / tokens,
        "greedy_matches_full": int(matches),
    }


@dataclass
class Session:
    """The model folders (built on first use), a port per run and the runs' folder."""

    quick: bool
    runs: Path
    folders: dict[str, Path] = field(default_factory=dict)

    def folder(self, model: str) -> Path:
        if model not in self.folders:
            if model == "tiny-llama":
                self.folders[model] = build_tiny_llama("quick" if self.quick else "standard")
            else:
                self.folders[model] = build_smollm2()
        return self.folders[model]


@benchmark("hat")
class HatBenchmark(Benchmark[Session]):
    """HAT against cloud-only, U-shaped and token speculative decoding, and its ablations:
    TTFT, TBT, acceptance, bytes per token, cloud compute per token."""

    kinds = ("HatInferenceService",)

    def cases(self) -> list[Case]:
        if self.quick:
            return [self._case("tiny-llama", "chat", 1)]
        return [
            self._case(model, kind, concurrency)
            for model in MODELS
            for kind in PROMPT_KINDS[model]
            for concurrency in CONCURRENCY[model]
        ]

    def _case(self, model: str, kind: str, concurrency: int) -> Case:
        return Case(
            f"{model}-{kind}-c{concurrency}",
            {
                "model": model,
                "prompt_kind": kind,
                "concurrency": concurrency,
                "prompts_per_device": 2 if self.quick else 4,
                "new_tokens": 16 if self.quick else 64,
                "chunk_size": 128,
                "adapter_steps": 20 if self.quick else ADAPTER_STEPS[model],
                "device_profile": DEVICE,
                "cloud_compute_factor": CLOUD_FACTOR,
            },
        )

    def methods(self) -> list[str]:
        return ["cloud-only", "u-shape", "sd-tokens", "hat"] if self.quick else list(METHODS)

    @contextmanager
    def session(self) -> Iterator[Session]:
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise
        with environment(ROLE_ENV), tempfile.TemporaryDirectory(prefix="edgeloom-hat-") as runs:
            yield Session(self.quick, Path(runs))

    def run_case(self, case: Case, methods: Sequence[str], session: Session) -> CaseResult:
        p = case.params
        folder = session.folder(p["model"])
        model, tokenizer = load_model(folder)
        count = p["concurrency"] * p["prompts_per_device"]
        texts = prompts(p["model"], p["prompt_kind"], count, tokenizer)
        expected = reference(model, tokenizer, texts, p["new_tokens"])
        del model  # the roles load their own
        lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
        results: dict[str, Figures] = {}
        devices = p["concurrency"]
        for method in methods:
            name = f"bench-{method}"
            resource = service(name, folder, case, method, free_ports(devices))
            with serve(resource, devices, session.runs / case.name) as urls:
                # device i answers prompts i, i + devices, ...: each its own, one at a time
                work = [(urls[f"device-{i}"], name, texts[i::devices]) for i in range(devices)]
                with ThreadPoolExecutor(devices) as pool:
                    per_device = list(pool.map(lambda w: ask_all(*w, p["new_tokens"]), work))
            answers = [per_device[i % devices][i // devices] for i in range(count)]
            results[method] = r = summarise(answers, expected)
            print(
                f"  {method}: TTFT p50 {r['ttft_p50_s']:.3f} s, TBT p50 {r['tbt_p50_s']:.4f} s, "
                f"acceptance {r['acceptance_rate'] or 0:.2f}, "
                f"greedy match {r['greedy_matches_full']}",
                file=sys.stderr,
                flush=True,
            )
        return CaseResult(results, params={"prompt_tokens_mean": statistics.mean(lengths)})

    def plot(self, result: BenchResult, path: Path) -> None:
        """TTFT and TBT (p50) of every method, per case."""
        names = [c["case"] for c in result.cases]
        methods = list(result.cases[0]["results"]) if result.cases else []
        with panels(path, 2, (max(6.0, 1.2 * len(names)), 4.5), columns=1) as (ttft, tbt):
            for ax, metric, label in (
                (ttft, "ttft_p50_s", "time to first token, p50 (emulated s)"),
                (tbt, "tbt_p50_s", "time between tokens, p50 (emulated s)"),
            ):
                grouped_bars(
                    ax,
                    names,
                    {m: [c["results"][m][metric] or 0.0 for c in result.cases] for m in methods},
                )
                ax.set(title=label, ylabel="s")
                ax.tick_params(axis="x", labelrotation=20, labelsize=8)
