"""FedAvg (McMahan et al., AISTATS 2017): every selected worker trains the whole model locally;
models are averaged by sample count. A round lasts as long as its slowest worker."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgeloom.algos.common import average_state_dicts
from edgeloom.apps.mergesfl.messages import Load, Timing, TrainLocal, Upload
from edgeloom.apps.mergesfl.strategies.common import Plan, ServerJob, mean_loss, random_plan
from edgeloom.runtime.federation import Reply, RoundOutcome


@dataclass
class LocalFit:
    """A FedAvg round before aggregation."""

    plan: Plan
    alive: list[int]
    dropped: list[int]
    steps: dict[int, tuple[Reply[Timing], Reply[Timing], Reply[Timing]]]
    """worker -> its load, local training and upload replies."""


@dataclass
class FedAvg:
    """FedAvg (McMahan et al., AISTATS 2017); see the module docstring."""

    job: ServerJob

    @property
    def whole(self) -> nn.Sequential:
        return nn.Sequential(self.job.bottom, self.job.top)

    async def configure(self, round: int) -> Plan:
        return random_plan(self.job, round)

    async def fit(self, round: int, plan: Plan) -> LocalFit:
        """Load the whole model, train locally, upload: three parallel calls."""
        workers, iterations = self.job.participants, self.job.spec.training.iterations_per_round
        state = self.whole.state_dict()
        loads, dropped = await workers.call_many(
            plan.chosen,
            lambda i: Load(
                round=round,
                batch_size=plan.batches[i],
                learning_rate=plan.learning_rate,
                whole_model=True,
            ),
            Timing,
            lambda i: state,
        )
        trains, lost = await workers.call_many(
            workers.require(list(loads)),
            lambda i: TrainLocal(round=round, iterations=iterations),
            Timing,
        )
        dropped += lost
        ups, lost = await workers.call_many(
            workers.require(list(trains)),
            lambda i: Upload(round=round),
            Timing,
            check=lambda i, rep: self.job.check_upload(i, rep, state),
        )
        dropped += lost
        alive = workers.require(list(ups))
        return LocalFit(plan, alive, dropped, {i: (loads[i], trains[i], ups[i]) for i in alive})

    async def aggregate(self, round: int, fitted: LocalFit) -> RoundOutcome:
        """Whole models averaged by sample count; the round lasts as its slowest worker."""
        uploads = [fitted.steps[i][2] for i in fitted.alive]
        self.whole.load_state_dict(
            average_state_dicts(
                [up.message.tensors for up in uploads], [float(up.value.samples) for up in uploads]
            )
        )
        per_worker, vt = {}, 0.0
        for i in fitted.alive:
            steps = [reply.value for reply in fitted.steps[i]]
            vt = max(vt, sum(t.total_s for t in steps))
            per_worker[i] = (
                fitted.plan.batches[i],
                sum(t.compute_s for t in steps),
                sum(t.upload_s + t.download_s for t in steps),
            )
        losses = [s[1].value.loss for s in fitted.steps.values() if s[1].value.loss is not None]
        return RoundOutcome(
            fitted.alive, sorted(set(fitted.dropped)), vt, mean_loss(losses), per_worker
        )
