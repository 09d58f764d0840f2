"""PruneJob ``pruner`` role: load, measure, prune, measure, save, report.

The pruning itself runs in a worker thread so the bus stays responsive; every stage change is
published on the job's status subject and exported as metrics.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import tempfile
import time
from pathlib import Path

from edgeloom.api.kinds.prunejob import PruneJobSpec, PruneJobStatus
from edgeloom.api.messages import JobResult
from edgeloom.api.status import Condition, Phase, Progress, set_condition
from edgeloom.apps.comp.artifacts import get_folder, put_folder
from edgeloom.apps.comp.inputs import prepare, resolve_builtin
from edgeloom.apps.comp.methods import run_method
from edgeloom.apps.comp.metrics import PrunerMetrics
from edgeloom.models.llm import save_model
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)


def peak_memory_bytes() -> int:
    """Peak resident set size of this process (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Reporter:
    """Builds this job's status and publishes it."""

    def __init__(self, ctx: RoleContext, metrics: PrunerMetrics) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self.status = PruneJobStatus(observed_generation=ctx.resource.metadata.generation)
        self.conditions: list[Condition] = []
        self.started = time.monotonic()

    async def publish(
        self,
        phase: Phase,
        stage: str,
        message: str,
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        ready = "True" if phase == Phase.SUCCEEDED else "False"  # Ready: finished with a result
        reason = {Phase.SUCCEEDED: "Completed", Phase.FAILED: "Failed"}.get(phase, stage)
        self.conditions = set_condition(
            self.conditions, "Ready", ready, reason, message, self.ctx.resource.metadata.generation
        )
        self.status.phase = phase
        self.status.conditions = self.conditions
        self.status.progress = Progress(
            round=done,
            total_rounds=total,
            stage=stage,
            metric_name=self.status.quality_metric,
            metric_value=self.status.quality_after or self.status.quality_before,
            wall_time_seconds=round(time.monotonic() - self.started, 3),
        )
        self.metrics.stage(stage)
        if done is not None:
            self.metrics.layers_done.set(done)
        await self.ctx.report(self.status)


async def run(ctx: RoleContext) -> None:
    spec: PruneJobSpec = ctx.spec
    reporter = Reporter(ctx, PrunerMetrics(ctx.metrics))
    try:
        summary = await _prune(ctx, spec, reporter)
    except Exception as err:
        log.exception("pruning failed")
        await reporter.publish(Phase.FAILED, "Failed", str(err))
        await ctx.bus.publish(
            ctx.subject("result"),
            JobResult(succeeded=False, message=str(err), status=reporter.status.to_wire()),
        )
        raise
    message = (
        f"{spec.method.value}: {summary['params_before']} -> {summary['params_after']} "
        f"parameters, {reporter.status.quality_metric} {summary['quality_before']:.4g} -> "
        f"{summary['quality_after']:.4g}"
    )
    await reporter.publish(Phase.SUCCEEDED, "Done", message)
    await ctx.bus.publish(
        ctx.subject("result"),
        JobResult(
            succeeded=True,
            message=message,
            status=reporter.status.to_wire(),
            summary=summary,
            metric_name=reporter.status.quality_metric or "quality",
        ),
    )


async def _prune(ctx: RoleContext, spec: PruneJobSpec, reporter: Reporter) -> dict:
    status, metrics = reporter.status, reporter.metrics
    loop = asyncio.get_running_loop()
    await reporter.publish(Phase.RUNNING, "Loading", "loading the model and calibration data")
    with tempfile.TemporaryDirectory(prefix="edgeloom-model-") as scratch:
        folder = await _model_folder(ctx, spec, Path(scratch))
        inputs = await asyncio.to_thread(prepare, spec, folder)
        before = await asyncio.to_thread(inputs.measure, inputs.model)
    status.quality_metric = before.name
    status.quality_before = before.headline
    status.params_before = sum(p.numel() for p in inputs.model.parameters())
    metrics.params("before", status.params_before)
    metrics.quality("before", before.headline)

    def progress(stage: str, done: int, total: int) -> None:
        asyncio.run_coroutine_threadsafe(
            reporter.publish(Phase.RUNNING, stage, f"{stage}: {done}/{total} layers", done, total),
            loop,
        )

    started = time.monotonic()
    report = await asyncio.to_thread(run_method, spec, inputs, progress)
    prune_s = time.monotonic() - started
    await reporter.publish(Phase.RUNNING, "Evaluating", "measuring the pruned model")
    after = await asyncio.to_thread(inputs.measure, inputs.model)
    status.quality_after = after.headline
    status.params_after = sum(p.numel() for p in inputs.model.parameters())
    metrics.params("after", status.params_after)
    metrics.quality("after", after.headline)

    await reporter.publish(Phase.RUNNING, "Saving", "saving the pruned model")
    output = Path(spec.output.path) if spec.output.path else _default_output(ctx)
    await asyncio.to_thread(save_model, inputs.model, inputs.tokenizer, output)
    if spec.output.object_store is not None:
        ref = spec.output.object_store
        await put_folder(ctx.bus, ref.bucket, ref.name, output)
    status.output_path = str(output)
    status.peak_memory_bytes = peak_memory_bytes()
    metrics.peak_memory.set(status.peak_memory_bytes)
    return {
        "method": spec.method.value,
        "ratio": spec.ratio,
        "params_before": status.params_before,
        "params_after": status.params_after,
        "block_params_before": report.params_before,
        "block_params_after": report.params_after,
        "removed_layers": ",".join(map(str, report.removed_layers)) or "none",
        "quality_before": before.headline,
        "quality_after": after.headline,
        **{f"{k}_after": v for k, v in after.values.items() if k != after.name},
        "prune_wall_s": round(prune_s, 3),
        "peak_memory_bytes": status.peak_memory_bytes,
        "output": str(output),
    }


async def _model_folder(ctx: RoleContext, spec: PruneJobSpec, scratch: Path) -> Path:
    source = spec.model
    if source.builtin is not None:
        return await asyncio.to_thread(resolve_builtin, source.builtin)
    if source.path is not None:
        return Path(source.path)
    ref = source.object_store
    return await get_folder(ctx.bus, ref.bucket, ref.name, scratch)


def _default_output(ctx: RoleContext) -> Path:
    base = ctx.run_dir if ctx.run_dir is not None else Path.cwd() / ctx.name
    return base / "model"
