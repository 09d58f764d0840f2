"""MergeSFL (Liao et al., ICDE 2024): the server merges the selected workers' features into one
mixed batch, takes one top-model step and returns each worker its rescaled gradient slice;
bottoms are aggregated weighted by batch size. The control step selects workers and regulates
their batch sizes from measured speeds (:func:`edgeloom.algos.mergesfl.select_workers`).

Ablations (``spec.ablation``): without feature merging the shared top model steps on each
worker's batch in turn; without batch regulation every worker gets ``B / K``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeloom.algos.mergesfl import (
    MergeSFLConfig,
    aggregate_bottom_models,
    merge_features,
    select_workers,
    split_gradients,
)
from edgeloom.apps.mergesfl.setup import learning_rate
from edgeloom.apps.mergesfl.strategies.common import (
    Features,
    Plan,
    ServerJob,
    SplitFit,
    random_plan,
    sgd,
    split_exchange,
    step_each,
    step_on,
)
from edgeloom.runtime.federation import RoundOutcome


def label_distribution_from_counts(counts: list[int]) -> np.ndarray:
    """A worker's label distribution from its label counts (zeros when it holds no data)."""
    total = max(sum(counts), 1)
    return np.asarray(counts, dtype=np.float64) / total


@dataclass
class MergeSFL:
    """MergeSFL (Liao et al., ICDE 2024, arXiv:2311.13348): the module docstring says which
    parts follow the paper and the official code, and which are reconstructions."""

    job: ServerJob

    async def configure(self, round: int) -> Plan:
        """Selection + batch regulation once every candidate's speed is measured; before
        that (the first round) random workers with equal batches."""
        job, t = self.job, self.job.spec.training
        candidates = job.candidates()
        if not all(i in job.estimates for i in candidates):
            return random_plan(job, round)
        choice = select_workers(
            [
                label_distribution_from_counts(job.participants.joined[i].label_counts)
                for i in candidates
            ],
            [job.estimates[i][0] for i in candidates],
            [job.estimates[i][1] for i in candidates],
            job.round_size(candidates),
            MergeSFLConfig(
                total_batch_size=t.total_batch_size,
                min_batch_size=t.min_batch_size,
                max_batch_size=t.max_batch_size,
                batch_control="joint" if job.spec.ablation.joint_batch_sizing else "regulation",
                joint_slack=t.joint_time_slack,
            ),
            job.rng,
        )
        chosen = [candidates[j] for j in choice.workers]
        batches = (
            dict(zip(chosen, choice.batch_sizes, strict=True))
            if job.spec.ablation.batch_regulation
            else job.uniform_batches(chosen)
        )
        return Plan(round, chosen, batches, learning_rate(job.spec, round))

    async def fit(self, round: int, plan: Plan) -> SplitFit:
        """The split exchange with one merged top-model step per iteration (or, without
        feature merging, one step per worker's batch in turn)."""
        top = self.job.top
        opt = sgd(top.parameters(), plan.learning_rate, self.job.spec)

        def merged_step(
            alive: list[int], data: dict[int, Features]
        ) -> tuple[dict[int, torch.Tensor], list[float]]:
            feats, labels, slices = merge_features(
                [data[i][0] for i in alive], [data[i][1] for i in alive]
            )
            grad, loss = step_on(top, opt, feats, labels)
            sizes = [len(data[i][1]) for i in alive]
            grads = dict(zip(alive, split_gradients(grad, slices, sizes), strict=True))
            return grads, [loss]

        def step_in_turn(
            alive: list[int], data: dict[int, Features]
        ) -> tuple[dict[int, torch.Tensor], list[float]]:
            return step_each(alive, data, lambda i: (top, opt))

        step = merged_step if self.job.spec.ablation.feature_merging else step_in_turn
        return await split_exchange(self.job, plan, step)

    async def aggregate(self, round: int, fitted: SplitFit) -> RoundOutcome:
        """Bottoms averaged by batch size; the shared top has stepped already."""
        batches = [fitted.plan.batches[i] for i in fitted.alive]
        self.job.bottom.load_state_dict(aggregate_bottom_models(fitted.states(), batches))
        return fitted.outcome()
