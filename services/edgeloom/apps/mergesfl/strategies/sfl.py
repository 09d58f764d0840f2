"""Vanilla split learning (SFL): the selected workers train one after another, each starting
from the previous one's bottom model with the shared server top; the round's device time is the
sum of theirs. Nothing is averaged: the last worker's bottom is the round's model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel

from edgeloom.apps.mergesfl.messages import Backward, Forward, Load, Timing, Upload
from edgeloom.apps.mergesfl.strategies.common import (
    Plan,
    ServerJob,
    Usage,
    features_of,
    mean_loss,
    random_plan,
    sgd,
    step_on,
)
from edgeloom.runtime.device import compute_timer
from edgeloom.runtime.federation import LOST, Check, Reply, RoundOutcome

log = logging.getLogger(__name__)


@dataclass
class SequentialFit:
    """A split-learning round: who finished, who was dropped, the summed device time."""

    done: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    virtual_time_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    usage: dict[int, Usage] = field(default_factory=dict)


@dataclass
class SplitLearning:
    """Vanilla split learning (Gupta and Raskar, 2018; the SFL baseline of the MergeSFL paper);
    see the module docstring."""

    job: ServerJob

    async def configure(self, round: int) -> Plan:
        return random_plan(self.job, round)

    async def fit(self, round: int, plan: Plan) -> SequentialFit:
        """The chosen workers in a random order, each a whole round on the shared top."""
        job = self.job
        order = [plan.chosen[j] for j in job.rng.permutation(len(plan.chosen))]
        opt = sgd(job.top.parameters(), plan.learning_rate, job.spec)
        fit = SequentialFit()
        for i in order:
            try:
                fit.virtual_time_s += await self._train_in_turn(i, plan, opt, fit)
                fit.done.append(i)
            except LOST as err:
                log.warning("worker %d dropped from this round: %s", i, err)
                fit.dropped.append(i)
        job.participants.require(fit.done)
        job.update_estimates(fit.usage, set(fit.done))
        return fit

    async def _train_in_turn(
        self, i: int, plan: Plan, opt: torch.optim.Optimizer, fit: SequentialFit
    ) -> float:
        job, r, batch = self.job, plan.round, plan.batches[i]

        async def call(
            cmd: BaseModel,
            tensors: dict[str, torch.Tensor] | None = None,
            check: Check[Timing] | None = None,
        ) -> Reply[Timing]:
            reply = await job.participants.call(i, cmd, Timing, tensors, check)
            fit.usage.setdefault(i, Usage(batch)).add(reply.value)
            return reply

        bottom_state = job.bottom.state_dict()
        load = Load(round=r, batch_size=batch, learning_rate=plan.learning_rate)
        vt = (await call(load, bottom_state)).value.total_s
        for it in range(job.spec.training.iterations_per_round):
            fwd = await call(
                Forward(round=r, iteration=it),
                check=lambda i, rep: job.check_features(i, rep, batch),
            )
            features, labels = features_of(fwd)
            with compute_timer() as server_t:
                grad, loss = step_on(job.top, opt, features, labels)
            fit.losses.append(loss)
            bwd = await call(Backward(round=r, iteration=it), {"grad": grad})
            server_s = job.server_seconds(server_t.seconds, len(labels))
            vt += fwd.value.total_s + server_s + bwd.value.total_s
        up = await call(
            Upload(round=r), check=lambda i, rep: job.check_upload(i, rep, bottom_state)
        )
        job.bottom.load_state_dict(up.message.tensors)
        return vt + up.value.total_s

    async def aggregate(self, round: int, fitted: SequentialFit) -> RoundOutcome:
        """Nothing to average: the last worker's bottom is already loaded."""
        return RoundOutcome(
            fitted.done,
            fitted.dropped,
            fitted.virtual_time_s,
            mean_loss(fitted.losses),
            {i: u.figures() for i, u in fitted.usage.items()},
        )
