"""SplitTrainingJob server: top model, control step, aggregation, evaluation, checkpoints.

The server is a federation coordinator (:mod:`edgeloom.runtime.federation`): it waits for
workers to join, runs the rounds of the method the spec names (one strategy per method,
:mod:`edgeloom.apps.mergesfl.strategies`), evaluates the whole model on the held-out balanced
test set after each round, reports through the job reporter, checkpoints every
``checkpointInterval`` rounds and resumes from there after a restart. A resumed server knows
no worker until it joins (workers that outlived the server join again when it calls them), so
it resumes as well when every role of the job was restarted with it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from edgeloom.api.kinds.splittraining import SplitTrainingJobSpec, SplitTrainingJobStatus
from edgeloom.api.status import Phase
from edgeloom.apps.mergesfl.messages import Join, Stop
from edgeloom.apps.mergesfl.metrics import ServerMetrics
from edgeloom.apps.mergesfl.setup import build_models, build_problem
from edgeloom.apps.mergesfl.strategies import STRATEGIES, ServerJob
from edgeloom.apps.mergesfl.strategies.common import check_join
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.federation import Participants, RoundOutcome, RunStore, run_rounds
from edgeloom.runtime.reporter import History, JobFailed, JobReporter, Outcome
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
    history: History
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


@dataclass
class Server:
    ctx: RoleContext[SplitTrainingJobSpec]
    job: ServerJob
    metrics: ServerMetrics
    reporter: JobReporter[SplitTrainingJobStatus]
    store: RunStore[ServerState]
    start_round: int = 0
    virtual_time_s: float = 0.0
    best_accuracy: float = 0.0
    time_to_target_s: float | None = None
    dropped_total: int = 0
    history: History = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    bytes_offset: int = 0
    """Bytes moved before this process started (restored from the checkpoint)."""
    bytes_total: int = 0
    """Bytes moved up to the end of the last round: the one figure history, status and
    summary all report (checkpoint and status traffic after a round is not training)."""
    last_checkpoint: str | None = None

    @property
    def spec(self) -> SplitTrainingJobSpec:
        return self.job.spec

    def bytes_moved(self) -> int:
        return self.bytes_offset + self.ctx.bus.bytes_sent + self.ctx.bus.bytes_received

    def start(self) -> None:
        """Progress a report shows before the first round (also when the job fails first)."""
        self.reporter.resume(0, **self._planned())

    def _planned(self) -> dict[str, Any]:
        return {
            "total_rounds": self.spec.training.rounds,
            "participants_total": self.spec.worker_count,
        }

    async def restore(self) -> bool:
        """Resume from the last checkpoint, if this run has one; a checkpoint this version
        cannot read is logged and the run starts over."""
        try:
            saved = await self.store.load()
        except CodecError as err:
            log.warning("ignoring an unreadable checkpoint, starting over: %s", err)
            return False
        if saved is None:
            return False
        state, weights = saved
        self.job.bottom.load_state_dict(weights["bottom"])
        self.job.top.load_state_dict(weights["top"])
        self.start_round = state.round
        self.virtual_time_s, self.best_accuracy = state.virtual_time_s, state.best_accuracy
        self.time_to_target_s, self.dropped_total = state.time_to_target_s, state.dropped_total
        self.history = state.history
        self.job.participants.exclude(state.excluded)
        self.job.estimates.update(state.estimates)
        self.bytes_offset = self.bytes_total = state.bytes_total
        self.last_checkpoint = self.store.ref(state.round)
        last = self.history[-1] if self.history else {}
        self.reporter.status.time_to_target_seconds = self.time_to_target_s
        self.reporter.resume(
            state.round,
            **self._planned(),
            round=state.round,
            metric_value=last.get("accuracy"),
            virtual_time_seconds=self.virtual_time_s,
            bytes_total=self.bytes_total,
            last_checkpoint=self.last_checkpoint,
        )
        log.info("resumed from the checkpoint of round %d", state.round)
        return True

    async def checkpoint(self, completed_rounds: int) -> None:
        """Store both models and the server's state for a restart."""
        self.last_checkpoint = await self.store.save(
            completed_rounds,
            {"bottom": self.job.bottom.state_dict(), "top": self.job.top.state_dict()},
            ServerState(
                round=completed_rounds,
                virtual_time_s=self.virtual_time_s,
                bytes_total=self.bytes_total,
                best_accuracy=self.best_accuracy,
                time_to_target_s=self.time_to_target_s,
                dropped_total=self.dropped_total,
                history=self.history,
                estimates=self.job.estimates,
                excluded=sorted(self.job.participants.excluded),
            ),
        )

    def record(self, round_: int, outcome: RoundOutcome, ev: Evaluation) -> None:
        """Add round ``round_`` to the history, the clocks and the metrics."""
        self.virtual_time_s += outcome.virtual_time_s
        self.dropped_total += len(outcome.dropped)
        self.best_accuracy = max(self.best_accuracy, ev.accuracy)
        target = self.spec.stop.target_accuracy
        if target is not None and self.time_to_target_s is None and ev.accuracy >= target:
            self.time_to_target_s = self.virtual_time_s
        reported = self.bytes_total
        self.bytes_total = self.bytes_moved()
        self.history.append(
            {
                "round": round_ + 1,
                "virtual_time_seconds": round(self.virtual_time_s, 4),
                "wall_time_seconds": round(time.monotonic() - self.started, 3),
                "accuracy": ev.accuracy,
                "loss": round(ev.loss, 5),
                "train_loss": outcome.train_loss,
                "bytes_total": self.bytes_total,
                "participants": len(outcome.participants),
                "dropped": len(outcome.dropped),
            }
        )
        m = self.metrics
        m.round_duration.observe(outcome.virtual_time_s)
        m.accuracy.set(ev.accuracy)
        m.loss.set(ev.loss)
        m.participants.set(len(outcome.participants))
        m.dropped.inc(len(outcome.dropped))
        m.bytes.inc(self.bytes_total - reported)
        for index, (batch, compute_s, transfer_s) in outcome.per_worker.items():
            m.worker(index, batch, compute_s, transfer_s)

    async def after_round(self, r: int, outcome: RoundOutcome) -> bool:
        """Evaluate, record, checkpoint and report round ``r``; True once the target is met
        (and the job is to stop there)."""
        ev = evaluate(nn.Sequential(self.job.bottom, self.job.top), *self._test_set())
        self.record(r, outcome, ev)
        if (r + 1) % self.spec.checkpoint_interval == 0:
            await self.checkpoint(r + 1)
        self.reporter.status.time_to_target_seconds = self.time_to_target_s
        await self.reporter.progress(
            "RoundCompleted",
            f"round {r + 1}: accuracy {ev.accuracy:.4f}",
            phase=Phase.DEGRADED if outcome.dropped else Phase.RUNNING,
            steps=len(self.history),
            planned=self.spec.training.rounds,
            **self._planned(),
            round=len(self.history),
            participants_ready=len(outcome.participants),
            participants_dropped=len(outcome.dropped),
            metric_value=ev.accuracy,
            virtual_time_seconds=self.virtual_time_s,
            bytes_total=self.bytes_total,
            last_checkpoint=self.last_checkpoint,
        )
        log.info("round %d: accuracy %.4f, virtual %.1f s", r + 1, ev.accuracy, self.virtual_time_s)
        return self.time_to_target_s is not None and self.spec.stop.stop_at_target

    def _test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        test = self.job.problem.test
        return test.x, test.y

    async def train(self) -> Outcome:
        """Resume or start, wait for the workers to join, run the rounds; the job's outcome."""
        if not await self.restore():
            self.start()
        await self.job.participants.wait_for_all(JOIN_TIMEOUT_S)
        strategy = STRATEGIES[self.spec.method](self.job)
        rounds = self.spec.training.rounds
        if await run_rounds(strategy, self.start_round, rounds, self.after_round):
            return self.outcome(f"target accuracy {self.spec.stop.target_accuracy} reached")
        return self.outcome(f"{rounds} rounds completed")

    def outcome(self, message: str) -> Outcome:
        """The job's end: summary figures, the per-round history and ``finalAccuracy`` (set
        only now; a running job's accuracy is its progress metric)."""
        last = self.history[-1] if self.history else {}
        self.reporter.status.final_accuracy = last.get("accuracy")
        return Outcome(
            message,
            summary={
                "method": self.spec.method.value,
                "rounds": len(self.history),
                "final_accuracy": last.get("accuracy"),
                "best_accuracy": self.best_accuracy,
                "target_accuracy": self.spec.stop.target_accuracy,
                "time_to_target_s": self.time_to_target_s,
                "virtual_time_s": round(self.virtual_time_s, 3),
                "wall_time_s": round(time.monotonic() - self.started, 2),
                "bytes_total": self.bytes_total,
                "workers_dropped": self.dropped_total,
            },
            history=self.history,
        )


async def run(ctx: RoleContext[SplitTrainingJobSpec]) -> None:
    """The ``server`` role."""
    spec = ctx.spec
    problem = build_problem(spec)
    bottom, top = build_models(spec, problem)
    participants = Participants(
        ctx,
        Join,
        total=spec.worker_count,
        min_participants=spec.participation.min_workers,
        deadline_s=spec.participation.round_deadline_seconds,
        check_join=lambda hello: check_join(hello, problem.num_classes),
    )
    job = ServerJob(
        spec, problem, bottom, top, np.random.default_rng(spec.training.seed), participants
    )
    server = Server(
        ctx,
        job,
        ServerMetrics(ctx.metrics),
        JobReporter(
            ctx, SplitTrainingJobStatus(), metric_name="accuracy", planned=spec.training.rounds
        ),
        RunStore.of(ctx, ServerState),
    )
    await participants.listen()
    try:
        # only JobFailed ends the job; other errors restart the pod, which resumes
        await server.reporter.run(server.train, on_failure=server.outcome, fatal=(JobFailed,))
    except JobFailed:
        await participants.broadcast(Stop())
        raise
    # not on SIGTERM (cancellation): the workers wait for the restarted server
    await participants.broadcast(Stop())
