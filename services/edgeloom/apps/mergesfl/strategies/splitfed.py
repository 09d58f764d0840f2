"""SplitFed V1 (Thapa et al., AAAI 2022): the parallel split exchange of MergeSFL, but the server
keeps one top-model copy per worker, trained on that worker's features only; tops and bottoms
are averaged by sample count each round. Workers are chosen at random with equal batches."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeloom.algos.common import average_state_dicts
from edgeloom.apps.mergesfl.strategies.common import (
    Features,
    Plan,
    ServerJob,
    SplitFit,
    random_plan,
    sgd,
    split_exchange,
    step_each,
)
from edgeloom.runtime.federation import RoundOutcome


@dataclass
class SplitFed:
    """SplitFed V1 (Thapa et al., AAAI 2022); see the module docstring."""

    job: ServerJob
    tops: dict[int, nn.Module] = field(default_factory=dict)
    """This round's per-worker top copies."""

    async def configure(self, round: int) -> Plan:
        return random_plan(self.job, round)

    async def fit(self, round: int, plan: Plan) -> SplitFit:
        """The split exchange, each worker's features stepping its own top copy."""
        self.tops = {i: copy.deepcopy(self.job.top) for i in plan.chosen}
        opts = {
            i: sgd(top.parameters(), plan.learning_rate, self.job.spec)
            for i, top in self.tops.items()
        }

        def per_worker_step(
            alive: list[int], data: dict[int, Features]
        ) -> tuple[dict[int, torch.Tensor], list[float]]:
            return step_each(alive, data, lambda i: (self.tops[i], opts[i]))

        return await split_exchange(self.job, plan, per_worker_step)

    async def aggregate(self, round: int, fitted: SplitFit) -> RoundOutcome:
        """Bottoms and top copies averaged by the workers' sample counts."""
        samples = [float(fitted.uploads[i].value.samples) for i in fitted.alive]
        self.job.bottom.load_state_dict(average_state_dicts(fitted.states(), samples))
        tops = [self.tops[i].state_dict() for i in fitted.alive]
        self.job.top.load_state_dict(average_state_dicts(tops, samples))
        self.tops = {}
        return fitted.outcome()
