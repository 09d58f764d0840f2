"""PruneJob end to end: the pruner role through the local runner, on real offline models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from edgeloom.api.kinds.prunejob import PruneJobSpec
from edgeloom.apps.comp.inputs import prepare
from edgeloom.local.nats_server import NatsServer
from edgeloom.local.runner import run_file
from edgeloom.models.sentence_encoder import minilm_path
from edgeloom.runtime.artifacts import get_folder, put_folder
from edgeloom.runtime.bus import Bus
from edgeloom_testkit.cli import edgeloom_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def write_job(directory: Path, name: str, **spec: object) -> Path:
    doc = {
        "apiVersion": "edgeloom.io/v1alpha1",
        "kind": "PruneJob",
        "metadata": {"name": name},
        "spec": {"calibration": {"samples": 16}, "evaluation": {"samples": 16}, **spec},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_comp_prunes_the_tiny_llama_in_its_own_process(tmp_path: Path, tiny_llama_quick: Path):
    output = tmp_path / "pruned"
    job = write_job(
        tmp_path,
        "llama-comp",
        model={"path": str(tiny_llama_quick)},
        ratio=0.25,
        output={"path": str(output)},
    )
    proc = edgeloom_run(job, tmp_path / "runs", "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "runs" / "llama-comp" / "result.json").read_text())
    summary, status = result["summary"], result["status"]
    assert status["phase"] == "Succeeded" and status["progress"]["stage"] == "Done"
    assert 0.2 < 1 - summary["block_params_after"] / summary["block_params_before"] < 0.3
    assert status["paramsAfter"] < status["paramsBefore"]
    assert status["qualityMetric"] == "perplexity"
    # COMP refits each block to the unpruned model, so quality may even improve slightly.
    assert 0.9 * status["qualityBefore"] < status["qualityAfter"] < 1.5 * status["qualityBefore"]
    assert status["peakMemoryBytes"] > 0
    # the step's own peak sits above the loaded model and data, so below the process's peak
    assert 0 < summary["prune_peak_memory_bytes"] < status["peakMemoryBytes"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Completed"
    metrics = (tmp_path / "runs" / "llama-comp" / "metrics" / "pruner-0.prom").read_text()
    assert "edgeloom_quality{" in metrics and 'stage="after"' in metrics

    # The saved model reloads into an equivalent module: same held-out perplexity as reported.
    assert not list(output.glob("*.bin"))
    spec = PruneJobSpec.model_validate(yaml.safe_load(job.read_text())["spec"])
    reloaded = prepare(spec, output)
    widths = reloaded.view.widths()
    assert len(widths) < 4 or any(w.intermediate_size < 344 for w in widths)
    assert reloaded.measure(reloaded.model).headline == pytest.approx(
        status["qualityAfter"], rel=1e-5
    )


@pytest.mark.parametrize("method", ["llm-pruner", "flap", "magnitude", "shortgpt"])
def test_every_baseline_runs_as_a_job(tmp_path: Path, tiny_llama_quick: Path, method: str):
    job = write_job(
        tmp_path, f"llama-{method}", method=method, model={"path": str(tiny_llama_quick)}, ratio=0.2
    )
    result = run_file(job, runs_dir=tmp_path / "runs", show_progress=False, in_process=True)
    assert result.succeeded, result.message
    assert result.summary["method"] == method
    assert result.status["paramsAfter"] < result.status["paramsBefore"]
    assert (tmp_path / "runs" / f"llama-{method}" / "model" / "model.safetensors").is_file()


def test_minilm_from_and_to_the_object_store(tmp_path: Path):
    with NatsServer(store_dir=tmp_path / "js") as nats:

        async def upload() -> None:
            async with await Bus.connect(nats.url, "uploader") as bus:
                await put_folder(bus, "models", "minilm", minilm_path())

        asyncio.run(upload())
        job = write_job(
            tmp_path,
            "minilm-comp",
            model={"objectStore": {"bucket": "models", "name": "minilm"}},
            ratio=0.2,
            output={"objectStore": {"bucket": "models", "name": "minilm-pruned"}},
        )
        result = run_file(
            job, runs_dir=tmp_path / "runs", show_progress=False, in_process=True, nats_url=nats.url
        )

        async def download() -> Path:
            async with await Bus.connect(nats.url, "downloader") as bus:
                return await get_folder(bus, "models", "minilm-pruned", tmp_path / "fetched")

        fetched = asyncio.run(download())
    assert result.succeeded, result.message
    status = result.status
    assert status["qualityMetric"] == "embedding_fidelity"
    assert status["qualityBefore"] == pytest.approx(1.0)
    assert 0.5 < status["qualityAfter"] < 1.0
    # before -> after can be read from the result for every quality figure
    assert 0 <= result.summary["retrieval_accuracy_after"] <= 1
    assert result.summary["retrieval_accuracy_before"] >= result.summary["retrieval_accuracy_after"]
    kstatus = {c["type"]: c["status"] for c in status["conditions"]}
    assert kstatus == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    local = Path(status["outputPath"])
    for file in local.rglob("*"):
        if file.is_file():
            assert (fetched / file.relative_to(local)).read_bytes() == file.read_bytes()


def test_a_missing_model_fails_the_job_naming_the_path(tmp_path: Path):
    job = write_job(tmp_path, "nomodel", model={"path": str(tmp_path / "nowhere")}, ratio=0.2)
    proc = edgeloom_run(job, tmp_path / "runs", "--no-progress", timeout=120)
    assert proc.returncode == 1
    assert "nowhere" in proc.stderr and "config.json is missing" in proc.stderr
    result = json.loads((tmp_path / "runs" / "nomodel" / "result.json").read_text())
    assert not result["succeeded"] and "role pruner-0" in result["message"]
    assert result["status"]["phase"] == "Failed"
    ready = {c["type"]: c for c in result["status"]["conditions"]}["Ready"]
    assert "config.json is missing" in ready["message"]  # the job's own words
