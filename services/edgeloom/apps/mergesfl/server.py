"""SplitTrainingJob server: top model, control module, aggregation, evaluation, checkpoints.

The server waits for workers to join, then runs rounds with the method the spec names
(:mod:`edgeloom.apps.mergesfl.rounds`), evaluates the whole model on the held-out balanced
test set after each round, publishes status, checkpoints to the JetStream object store + KV
every ``checkpointInterval`` rounds and resumes from there after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from edgeloom.api.jobstate import CHECKPOINT_BUCKET, STATE_BUCKET, checkpoint_name, state_key
from edgeloom.api.kinds.splittraining import (
    DropWorkers,
    SplitTrainingJobSpec,
    SplitTrainingJobStatus,
    WorkersDropped,
)
from edgeloom.api.messages import JobResult
from edgeloom.api.status import Condition, Phase, Progress, set_condition
from edgeloom.apps.mergesfl.messages import Join, JoinAck, Stop
from edgeloom.apps.mergesfl.metrics import ServerMetrics
from edgeloom.apps.mergesfl.rounds import ROUNDS, JobFailed, RoundOutcome, ServerJob
from edgeloom.apps.mergesfl.setup import build_models, build_problem
from edgeloom.runtime.bus import Message
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 120.0
EVAL_BATCH = 1024


class ServerState(BaseModel):
    """What survives a server restart (KV), next to the checkpointed weights (object store)."""

    round: int = Field(ge=0, description="Rounds completed at the checkpoint.")
    virtual_time_s: float
    bytes_total: int
    best_accuracy: float
    time_to_target_s: float | None
    dropped_total: int
    history: list[dict[str, float | int | None]]
    workers: dict[int, Join]
    estimates: dict[int, tuple[float, float]]
    excluded: list[int] = Field(default_factory=list)


@dataclass
class Evaluation:
    accuracy: float
    loss: float


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
    """Accuracy and mean cross-entropy of ``model`` on a test set."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            target = y[start : start + EVAL_BATCH]
            loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    return Evaluation(correct / len(y), loss / len(y))


def checkpoint_ref(name: str, completed_rounds: int) -> str:
    """How status names a checkpoint: bucket/object@round."""
    return f"{CHECKPOINT_BUCKET}/{name}@{completed_rounds}"


def run_id(ctx: RoleContext) -> str:
    """Identifies one execution of a job (the resource uid in Kubernetes)."""
    return os.environ.get("EDGELOOM_RUN_ID") or ctx.resource.metadata.uid or "default"


@dataclass
class Server:
    ctx: RoleContext
    job: ServerJob
    metrics: ServerMetrics
    state_key: str
    checkpoint_name: str
    start_round: int = 0
    virtual_time_s: float = 0.0
    best_accuracy: float = 0.0
    time_to_target_s: float | None = None
    dropped_total: int = 0
    history: list[dict[str, float | int | None]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    conditions: list[Condition] = field(default_factory=list)
    bytes_reported: int = 0
    last_checkpoint: str | None = None

    @property
    def spec(self) -> SplitTrainingJobSpec:
        return self.ctx.spec

    async def restore(self) -> bool:
        """Resume from the last checkpoint, if this run has one."""
        kv = await self.ctx.bus.key_value(STATE_BUCKET)
        state = await kv.get(self.state_key, ServerState)
        if state is None:
            return False
        ckpt = await self.ctx.bus.get_object(CHECKPOINT_BUCKET, self.checkpoint_name)
        self.job.bottom.load_state_dict(
            {k[7:]: v for k, v in ckpt.tensors.items() if k.startswith("bottom.")}
        )
        self.job.top.load_state_dict(
            {k[4:]: v for k, v in ckpt.tensors.items() if k.startswith("top.")}
        )
        self.start_round = state.round
        self.metrics.round.set(state.round)
        self.virtual_time_s, self.best_accuracy = state.virtual_time_s, state.best_accuracy
        self.time_to_target_s, self.dropped_total = state.time_to_target_s, state.dropped_total
        self.history = state.history
        self.job.workers.update(state.workers)
        self.job.drop(state.excluded)
        self.job.estimates.update(state.estimates)
        self.job.bytes_offset = state.bytes_total
        self.last_checkpoint = checkpoint_ref(self.checkpoint_name, state.round)
        log.info("resumed from the checkpoint of round %d", state.round)
        return True

    async def checkpoint(self, completed_rounds: int) -> None:
        tensors = {f"bottom.{k}": v for k, v in self.job.bottom.state_dict().items()}
        tensors.update({f"top.{k}": v for k, v in self.job.top.state_dict().items()})
        await self.ctx.bus.put_object(
            CHECKPOINT_BUCKET, self.checkpoint_name, f'{{"round": {completed_rounds}}}', tensors
        )
        kv = await self.ctx.bus.key_value(STATE_BUCKET)
        await kv.put(
            self.state_key,
            ServerState(
                round=completed_rounds,
                virtual_time_s=self.virtual_time_s,
                bytes_total=self.job.bytes_total,
                best_accuracy=self.best_accuracy,
                time_to_target_s=self.time_to_target_s,
                dropped_total=self.dropped_total,
                history=self.history,
                workers=self.job.workers,
                estimates=self.job.estimates,
                excluded=sorted(self.job.excluded),
            ),
        )
        self.last_checkpoint = checkpoint_ref(self.checkpoint_name, completed_rounds)

    def status(
        self,
        phase: Phase,
        reason: str,
        message: str,
    ) -> SplitTrainingJobStatus:
        last = self.history[-1] if self.history else {}
        ready = "True" if phase == Phase.SUCCEEDED else "False"  # Ready: finished with a result
        self.conditions = set_condition(
            self.conditions, "Ready", ready, reason, message, self.ctx.resource.metadata.generation
        )
        return SplitTrainingJobStatus(
            observed_generation=self.ctx.resource.metadata.generation,
            phase=phase,
            conditions=self.conditions,
            progress=Progress(
                round=len(self.history),
                total_rounds=self.spec.training.rounds,
                participants_ready=last.get("participants"),
                participants_total=self.spec.worker_count,
                participants_dropped=last.get("dropped"),
                metric_name="accuracy",
                metric_value=last.get("accuracy"),
                virtual_time_seconds=self.virtual_time_s,
                wall_time_seconds=round(time.monotonic() - self.started, 3),
                bytes_total=self.job.bytes_total,
                last_checkpoint=self.last_checkpoint,
            ),
            final_accuracy=last.get("accuracy"),
            time_to_target_seconds=self.time_to_target_s,
        )

    def record(self, round_: int, outcome: RoundOutcome, ev: Evaluation) -> None:
        self.virtual_time_s += outcome.virtual_time_s
        self.dropped_total += len(outcome.dropped)
        self.best_accuracy = max(self.best_accuracy, ev.accuracy)
        target = self.spec.stop.target_accuracy
        if target is not None and self.time_to_target_s is None and ev.accuracy >= target:
            self.time_to_target_s = self.virtual_time_s
        self.history.append(
            {
                "round": round_ + 1,
                "virtual_time_seconds": round(self.virtual_time_s, 4),
                "wall_time_seconds": round(time.monotonic() - self.started, 3),
                "accuracy": ev.accuracy,
                "loss": round(ev.loss, 5),
                "train_loss": outcome.train_loss,
                "bytes_total": self.job.bytes_total,
                "participants": len(outcome.participants),
                "dropped": len(outcome.dropped),
            }
        )
        m = self.metrics
        m.round.set(round_ + 1)
        m.round_duration.observe(outcome.virtual_time_s)
        m.accuracy.set(ev.accuracy)
        m.loss.set(ev.loss)
        m.participants.set(len(outcome.participants))
        m.dropped.inc(len(outcome.dropped))
        m.bytes.inc(self.job.bytes_total - self.bytes_reported)
        self.bytes_reported = self.job.bytes_total
        for index, (batch, compute_s, transfer_s) in outcome.per_worker.items():
            m.worker(index, batch, compute_s, transfer_s)

    def result(self, succeeded: bool, message: str, status: SplitTrainingJobStatus) -> JobResult:
        last = self.history[-1] if self.history else {}
        return JobResult(
            succeeded=succeeded,
            message=message,
            status=status.to_wire(),
            summary={
                "method": self.spec.method.value,
                "rounds": len(self.history),
                "final_accuracy": last.get("accuracy"),
                "best_accuracy": self.best_accuracy,
                "target_accuracy": self.spec.stop.target_accuracy,
                "time_to_target_s": self.time_to_target_s,
                "virtual_time_s": round(self.virtual_time_s, 3),
                "wall_time_s": round(time.monotonic() - self.started, 2),
                "bytes_total": self.job.bytes_total,
                "workers_dropped": self.dropped_total,
            },
            metric_name="accuracy",
            history=self.history,
        )


async def wait_for_workers(ctx: RoleContext, job: ServerJob) -> None:
    """Accept joins (also later ones: a restarted worker rejoins); wait for everyone at start."""
    everyone = asyncio.Event()

    expected = ctx.spec.worker_count - len(job.excluded)

    async def on_join(msg: Message) -> None:
        hello = msg.parse(Join)
        if hello.index >= ctx.spec.worker_count:
            await ctx.bus.respond(msg, JoinAck(accepted=False, reason="index out of range"))
            return
        if hello.index in job.excluded:
            reason = "the operator dropped this worker from the job"
            await ctx.bus.respond(msg, JoinAck(accepted=False, reason=reason, retire=True))
            return
        job.workers[hello.index] = hello
        await ctx.bus.respond(msg, JoinAck(accepted=True))
        if len(job.workers) >= expected:
            everyone.set()

    await ctx.bus.subscribe(ctx.subject("join"), on_join)
    if len(job.workers) >= expected:
        return
    try:
        await asyncio.wait_for(everyone.wait(), JOIN_TIMEOUT_S)
    except TimeoutError:
        if len(job.workers) < ctx.spec.participation.min_workers:
            raise JobFailed(
                f"only {len(job.workers)} of {ctx.spec.worker_count} workers joined "
                f"within {JOIN_TIMEOUT_S:g} s"
            ) from None
        log.warning("starting with %d of %d workers", len(job.workers), ctx.spec.worker_count)


async def run(ctx: RoleContext) -> None:
    spec: SplitTrainingJobSpec = ctx.spec
    problem = build_problem(spec)
    bottom, top = build_models(spec, problem)
    job = ServerJob(ctx, problem, bottom, top, np.random.default_rng(spec.training.seed))
    run = (ctx.namespace, ctx.name, run_id(ctx))
    server = Server(
        ctx,
        job,
        ServerMetrics(ctx.metrics),
        state_key=state_key(*run),
        checkpoint_name=checkpoint_name(*run),
    )
    server.metrics.planned_rounds.set(spec.training.rounds)
    await server.restore()

    async def on_control(msg: Message) -> None:
        cmd = msg.parse(DropWorkers)
        unknown = [i for i in cmd.workers if not 0 <= i < spec.worker_count]
        if unknown:
            raise ValueError(f"workers {unknown} are not in this job")
        log.warning("dropping workers %s for the rest of the job: %s", cmd.workers, cmd.reason)
        job.drop(cmd.workers)
        await ctx.bus.respond(msg, WorkersDropped(dropped=sorted(job.excluded)))

    await ctx.bus.subscribe(ctx.subject("control"), on_control)
    train_round = ROUNDS[spec.method]
    message, succeeded = "", True
    try:
        await wait_for_workers(ctx, job)
        for r in range(server.start_round, spec.training.rounds):
            outcome = await train_round(job, r)
            ev = evaluate(nn.Sequential(bottom, top), problem.test.x, problem.test.y)
            server.record(r, outcome, ev)
            if (r + 1) % spec.checkpoint_interval == 0:
                await server.checkpoint(r + 1)
            phase = Phase.DEGRADED if outcome.dropped else Phase.RUNNING
            note = f"round {r + 1}: accuracy {ev.accuracy:.4f}"
            await ctx.report(server.status(phase, "RoundCompleted", note))
            log.info(
                "round %d: accuracy %.4f, virtual %.1f s", r + 1, ev.accuracy, server.virtual_time_s
            )
            if server.time_to_target_s is not None:
                message = f"target accuracy {spec.stop.target_accuracy} reached"
                break
        else:
            message = f"{spec.training.rounds} rounds completed"
    except JobFailed as err:
        message, succeeded = str(err), False
    status = server.status(
        Phase.SUCCEEDED if succeeded else Phase.FAILED,
        "Completed" if succeeded else "Failed",
        message,
    )
    await ctx.report(status)
    await ctx.bus.publish(ctx.subject("result"), server.result(succeeded, message, status))
    await job.broadcast(Stop())
    if not succeeded:
        raise JobFailed(message)
