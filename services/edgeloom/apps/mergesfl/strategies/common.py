"""What the four SplitTrainingJob strategies share: the server's job view, the round plan,
device-time accounting and the parallel split exchange (forward features, step the top model,
send gradients back) that MergeSFL and SplitFed both run.

Device time of a parallel round is the load (slowest download), then per iteration the slowest
worker's forward + upload, the server's compute, and the slowest download + backward, then the
slowest upload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeloom.algos.mergesfl.baselines import random_select, uniform_batch_sizes
from edgeloom.api.kinds.splittraining import SplitTrainingJobSpec
from edgeloom.apps.mergesfl.messages import Backward, Forward, Join, Load, Timing, Upload
from edgeloom.apps.mergesfl.setup import Problem, learning_rate
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.device import compute_timer
from edgeloom.runtime.federation import Participants, Reply, RoundOutcome

log = logging.getLogger(__name__)
ESTIMATE_SMOOTHING = 0.5

WorkerFigures = tuple[int, float, float]
"""(batch size, compute seconds, transfer seconds) of one worker in one round."""


@dataclass
class ServerJob:
    """Server-side view of the job: models, participants and their measured speed."""

    spec: SplitTrainingJobSpec
    problem: Problem
    bottom: nn.Sequential
    top: nn.Sequential
    rng: np.random.Generator
    participants: Participants[Join]
    estimates: dict[int, tuple[float, float]] = field(default_factory=dict)
    """worker -> (per-sample compute s, per-sample transfer s), smoothed over rounds."""

    def candidates(self) -> list[int]:
        """Joined workers, ascending (the dead are retried: a restarted worker returns)."""
        return self.participants.require(sorted(self.participants.joined))

    def round_size(self, candidates: list[int]) -> int:
        """How many workers a round takes (``training.workersPerRound``, else all)."""
        return min(self.spec.training.workers_per_round or len(candidates), len(candidates))

    def uniform_batches(self, chosen: list[int]) -> dict[int, int]:
        """``totalBatchSize`` split as evenly as the batch bounds allow."""
        t = self.spec.training
        sizes = uniform_batch_sizes(
            t.total_batch_size, len(chosen), t.min_batch_size, t.max_batch_size
        )
        return dict(zip(chosen, sizes, strict=True))

    def update_estimates(self, usage: dict[int, Usage], feature_transfers: set[int]) -> None:
        """Smooth each worker's per-sample compute and feature-transfer time."""
        for i, u in usage.items():
            if u.samples == 0 or i not in feature_transfers:
                continue
            new = (u.compute_s / u.samples, u.transfer_s / u.samples)
            old = self.estimates.get(i, new)
            a = ESTIMATE_SMOOTHING
            self.estimates[i] = (a * new[0] + (1 - a) * old[0], a * new[1] + (1 - a) * old[1])

    def check_features(self, i: int, reply: Reply[Timing], batch: int) -> Features:
        """Worker ``i``'s features and labels, validated; CodecError when malformed."""
        tensors = reply.message.tensors
        feats, labels = tensors.get("features"), tensors.get("labels")
        if (
            feats is None
            or labels is None
            or feats.dtype != torch.float32
            or labels.dtype != torch.int64
            or labels.ndim != 1
            or not 0 < len(labels) <= batch
            or feats.shape[0] != len(labels)
            or int(labels.min()) < 0
            or int(labels.max()) >= self.problem.num_classes
        ):
            raise CodecError(f"worker {i} sent malformed features or labels")
        return feats, labels


Features = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Plan:
    """One round's participants, their batch sizes and the learning rate."""

    round: int
    chosen: list[int]
    batches: dict[int, int]
    learning_rate: float


def random_plan(job: ServerJob, r: int) -> Plan:
    """The baselines' control step: workers uniformly at random, equal batch sizes."""
    candidates = job.candidates()
    k = job.round_size(candidates)
    chosen = sorted(candidates[j] for j in random_select(len(candidates), k, job.rng))
    return Plan(r, chosen, job.uniform_batches(chosen), learning_rate(job.spec, r))


@dataclass
class Usage:
    """What one worker spent in one round."""

    batch: int
    compute_s: float = 0.0
    transfer_s: float = 0.0
    samples: int = 0

    def add(self, t: Timing) -> None:
        self.compute_s += t.compute_s
        self.transfer_s += t.upload_s + t.download_s
        self.samples += t.samples

    def figures(self) -> WorkerFigures:
        """What the server's per-worker metrics show of this round."""
        return (self.batch, self.compute_s, self.transfer_s)


def sgd(params: object, lr: float, spec: SplitTrainingJobSpec) -> torch.optim.SGD:
    """The SGD optimiser both sides create anew each round (momentum does not carry over)."""
    return torch.optim.SGD(params, lr=lr, momentum=spec.training.momentum)  # type: ignore[arg-type]


def step_on(
    top: nn.Module, opt: torch.optim.Optimizer, feats: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """One top-model step on one worker's features; returns the feature gradient and loss."""
    f = feats.detach().requires_grad_(True)
    top.train()
    opt.zero_grad()
    loss = nn.functional.cross_entropy(top(f), labels)
    loss.backward()
    opt.step()
    assert f.grad is not None
    return f.grad, float(loss.detach())


def step_each(
    alive: list[int],
    data: dict[int, Features],
    model_of: Callable[[int], tuple[nn.Module, torch.optim.Optimizer]],
) -> tuple[dict[int, torch.Tensor], list[float]]:
    """One top-model step per worker in turn, on the top (and optimiser) ``model_of(i)``."""
    grads, losses = {}, []
    for i in alive:
        grads[i], loss = step_on(*model_of(i), *data[i])
        losses.append(loss)
    return grads, losses


def mean_loss(values: list[float]) -> float | None:
    """The round's mean training loss, rounded for the history; None without steps."""
    return round(float(np.mean(values)), 5) if values else None


TopStep = Callable[[list[int], dict[int, Features]], tuple[dict[int, torch.Tensor], list[float]]]
"""The server's compute of one iteration: (alive, features) -> (gradient per worker, losses)."""


@dataclass
class SplitFit:
    """A parallel split round after its uploads, before aggregation."""

    plan: Plan
    alive: list[int]
    dropped: list[int]
    virtual_time_s: float
    losses: list[float]
    usage: dict[int, Usage]
    uploads: dict[int, Reply[Timing]]

    def states(self) -> list[dict[str, torch.Tensor]]:
        """The uploaded bottom models of the workers that finished, in ``alive`` order."""
        return [self.uploads[i].message.tensors for i in self.alive]

    def outcome(self) -> RoundOutcome:
        """The round's outcome for the coordinator."""
        return RoundOutcome(
            self.alive,
            sorted(set(self.dropped)),
            self.virtual_time_s,
            mean_loss(self.losses),
            {i: u.figures() for i, u in self.usage.items()},
        )


async def split_exchange(job: ServerJob, plan: Plan, top_step: TopStep) -> SplitFit:
    """Load the bottom model on the plan's workers, run the round's iterations (features up,
    ``top_step``, gradients down), then collect their bottom models."""
    spec, workers, r = job.spec, job.participants, plan.round
    bottom_state = job.bottom.state_dict()
    loads, dropped = await workers.call_many(
        plan.chosen,
        lambda i: Load(round=r, batch_size=plan.batches[i], learning_rate=plan.learning_rate),
        Timing,
        lambda i: bottom_state,
    )
    usage = {i: Usage(plan.batches[i]) for i in loads}
    for i, rep in loads.items():
        usage[i].add(rep.value)
    vt = max((rep.value.total_s for rep in loads.values()), default=0.0)
    alive = workers.require(list(loads))
    losses: list[float] = []
    for it in range(spec.training.iterations_per_round):
        fwd, lost = await workers.call_many(
            alive, lambda i, it=it: Forward(round=r, iteration=it), Timing
        )
        dropped += lost
        data = {}
        for i, rep in fwd.items():
            try:
                data[i] = job.check_features(i, rep, plan.batches[i])
            except CodecError as err:
                log.warning("%s", err)
                dropped.append(i)
        alive = workers.require([i for i in alive if i in data])
        with compute_timer() as server_t:
            grads, step_losses = top_step(alive, data)
        losses += step_losses
        bwd, lost = await workers.call_many(
            alive,
            lambda i, it=it: Backward(round=r, iteration=it),
            Timing,
            lambda i, g=grads: {"grad": g[i]},
        )
        dropped += lost
        for i in bwd:
            usage[i].add(fwd[i].value)
            usage[i].add(bwd[i].value)
        vt += (
            max(fwd[i].value.total_s for i in alive)
            + server_t.seconds
            + max((rep.value.total_s for rep in bwd.values()), default=0.0)
        )
        alive = workers.require([i for i in alive if i in bwd])
    job.update_estimates(usage, set(alive))
    ups, lost = await workers.call_many(alive, lambda i: Upload(round=r), Timing)
    dropped += lost
    alive = workers.require(list(ups))
    vt += max(rep.value.total_s for rep in ups.values())
    for i, rep in ups.items():
        usage[i].add(rep.value)
    return SplitFit(plan, alive, dropped, vt, losses, usage, ups)
