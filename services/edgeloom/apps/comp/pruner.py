"""PruneJob ``pruner`` role: load, measure, prune, measure, save, report.

The pruning itself runs in a worker thread so the bus stays responsive; every stage change is
published on the job's status subject and exported as metrics.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from edgeloom.api.kinds.prunejob import PruneJobSpec, PruneJobStatus, PruneStage
from edgeloom.apps.comp.inputs import prepare
from edgeloom.apps.comp.memory import PeakMemory, warm_up
from edgeloom.apps.comp.methods import run_method
from edgeloom.apps.comp.metrics import PrunerMetrics
from edgeloom.models.builtins import builtin_model_folder
from edgeloom.models.llm import save_model
from edgeloom.runtime.artifacts import fetch_model_folder, publish_folder
from edgeloom.runtime.reporter import JobFailed, JobReporter, Outcome
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)


def _log_lost_report(report: Future[None]) -> None:
    if not report.cancelled() and report.exception() is not None:
        log.warning("a progress report was lost: %s", report.exception())


def _message(spec: PruneJobSpec, status: PruneJobStatus) -> str:
    return (
        f"{spec.method.value}: {status.params_before} -> {status.params_after} parameters, "
        f"{status.quality_metric} {status.quality_before:.4g} -> {status.quality_after:.4g}"
    )


@dataclass
class Pruning:
    """One PruneJob's work, reported stage by stage."""

    ctx: RoleContext[PruneJobSpec]
    spec: PruneJobSpec
    reporter: JobReporter[PruneJobStatus]
    metrics: PrunerMetrics
    memory: PeakMemory = field(default_factory=PeakMemory)

    async def stage(
        self,
        stage: PruneStage,
        message: str,
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report ``stage`` (with ``done`` of ``total`` blocks) as status and metrics."""
        self.metrics.stage(stage)
        if done is not None:
            self.metrics.layers_done.set(done)
        status = self.reporter.status
        await self.reporter.progress(
            stage,
            message,
            steps=self.reporter.steps + 1,  # each stage change and each block counts one
            round=done,
            total_rounds=total,
            stage=stage,
            metric_value=status.quality_after or status.quality_before,
        )

    async def run(self) -> Outcome:
        """Load, measure, prune, measure, save; the summary of before and after."""
        spec, status, metrics = self.spec, self.reporter.status, self.metrics
        loop = asyncio.get_running_loop()
        await self.stage(PruneStage.LOADING, "loading the model and calibration data")
        with tempfile.TemporaryDirectory(prefix="edgeloom-model-") as scratch:
            folder = await fetch_model_folder(
                self.ctx.bus, spec.model, Path(scratch), builtin_model_folder
            )
            try:
                inputs = await asyncio.to_thread(prepare, spec, folder)
            except (FileNotFoundError, NotADirectoryError, ValueError) as err:
                # the model or data the spec names is not there or does not fit: a retry of
                # the pod would meet the same, so the job fails at once (its Job too)
                raise JobFailed(str(err)) from err
            before = await asyncio.to_thread(inputs.measure, inputs.model)
        status.quality_metric = self.reporter.metric_name = before.name
        status.quality_before = before.headline
        status.params_before = sum(p.numel() for p in inputs.model.parameters())
        metrics.params("before", status.params_before)
        metrics.quality("before", before.headline)

        def progress(stage: PruneStage, done: int, total: int) -> None:
            message = f"{stage}: {done}/{total} layers"
            report = asyncio.run_coroutine_threadsafe(self.stage(stage, message, done, total), loop)
            report.add_done_callback(_log_lost_report)

        await asyncio.to_thread(warm_up, inputs)
        self.memory.start_step()
        started = time.monotonic()
        report = await asyncio.to_thread(run_method, spec, inputs, progress)
        prune_s = time.monotonic() - started
        prune_peak = self.memory.step_bytes()
        await self.stage(PruneStage.EVALUATING, "measuring the pruned model")
        after = await asyncio.to_thread(inputs.measure, inputs.model)
        status.quality_after = after.headline
        status.params_after = sum(p.numel() for p in inputs.model.parameters())
        metrics.params("after", status.params_after)
        metrics.quality("after", after.headline)

        await self.stage(PruneStage.SAVING, "saving the pruned model")
        output = Path(spec.output.path) if spec.output.path else self._default_output()
        await asyncio.to_thread(save_model, inputs.model, inputs.tokenizer, output)
        await publish_folder(self.ctx.bus, output, spec.output)
        status.output_path = str(output)
        status.peak_memory_bytes = self.memory.process_bytes()
        metrics.peak_memory.set(status.peak_memory_bytes)
        metrics.stage(PruneStage.DONE)
        status.progress.stage = PruneStage.DONE
        summary = {
            "method": spec.method.value,
            "ratio": spec.ratio,
            "params_before": status.params_before,
            "params_after": status.params_after,
            "block_params_before": report.params_before,
            "block_params_after": report.params_after,
            "removed_layers": ",".join(map(str, report.removed_layers)) or "none",
            "quality_before": before.headline,
            "quality_after": after.headline,
            **{f"{k}_before": v for k, v in before.values.items() if k != before.name},
            **{f"{k}_after": v for k, v in after.values.items() if k != after.name},
            "prune_wall_s": round(prune_s, 3),
            "peak_memory_bytes": status.peak_memory_bytes,
            "prune_peak_memory_bytes": prune_peak,
            "output": str(output),
        }
        return Outcome(_message(spec, status), summary)

    def _default_output(self) -> Path:
        base = self.ctx.run_dir if self.ctx.run_dir is not None else Path.cwd() / self.ctx.name
        return base / "model"


async def run(ctx: RoleContext[PruneJobSpec]) -> None:
    """The ``pruner`` role."""
    spec = ctx.spec
    reporter = JobReporter(ctx, PruneJobStatus(), metric_name="quality")
    pruning = Pruning(ctx, spec, reporter, PrunerMetrics(ctx.metrics))
    await reporter.run(pruning.run)
