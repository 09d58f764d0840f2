"""What the four SplitTrainingJob strategies share: the server's job view, the round plan,
device-time accounting and the parallel split exchange (forward features, step the top model,
send gradients back) that MergeSFL and SplitFed both run.

The server trusts no worker's message beyond what it can check: a join must describe data the
selection can use (:func:`check_join`), features must have the bottom model's shape and finite
values, uploaded weights the model's tensors. A worker whose reply fails a check is dropped from
the round, with a warning that says why; the round goes on without it.

Device time of a parallel round is the load (slowest download), then per iteration the slowest
worker's forward + upload, the server's compute, and the slowest download + backward, then the
slowest upload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeloom.algos.mergesfl.baselines import random_select, uniform_batch_sizes
from edgeloom.api.kinds.splittraining import SplitTrainingJobSpec
from edgeloom.apps.mergesfl.messages import Backward, Forward, Join, Load, Timing, Upload
from edgeloom.apps.mergesfl.setup import Problem, feature_shape, learning_rate
from edgeloom.runtime.device import ComputeCost, compute_timer, reference_seconds
from edgeloom.runtime.federation import Participants, Refused, Reply, RoundOutcome, check_state

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
    feature_shape: torch.Size = field(init=False)
    """The trailing shape of the bottom model's features: what every worker must send."""
    top_cost: ComputeCost = field(init=False)
    """FLOPs per merged sample of the top model's step (the ``modelled`` server time)."""

    def __post_init__(self) -> None:
        self.feature_shape = feature_shape(self.bottom, self.problem.train.x)
        self.top_cost = ComputeCost.of(self.top, tuple(self.feature_shape), input_grad=True)

    def server_seconds(self, measured_s: float, samples: int) -> float:
        """The server's (unscaled) time for one top-model step over ``samples`` features."""
        return reference_seconds(self.spec.emulation, measured_s, self.top_cost.seconds(samples))

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

    def check_features(self, i: int, reply: Reply[Timing], batch: int) -> None:
        """Refuse worker ``i``'s Forward reply unless it holds 1 to ``batch`` int64 labels of
        this dataset's classes, as many finite float32 feature rows of the bottom model's
        shape, and a timing that counts them."""
        tensors = reply.message.tensors
        feats, labels = tensors.get("features"), tensors.get("labels")
        if feats is None or labels is None:
            raise Refused("the reply lacks its features or labels")
        if labels.dtype != torch.int64 or labels.ndim != 1 or not 0 < len(labels) <= batch:
            raise Refused(
                f"labels are {labels.dtype} {tuple(labels.shape)}, expected 1 to {batch} int64"
            )
        want = (len(labels), *self.feature_shape)
        if feats.dtype != torch.float32 or feats.shape != want:
            raise Refused(
                f"features are {feats.dtype} {tuple(feats.shape)}, expected torch.float32 {want}"
            )
        if int(labels.min()) < 0 or int(labels.max()) >= self.problem.num_classes:
            raise Refused(f"labels outside 0..{self.problem.num_classes - 1}")
        if not bool(torch.isfinite(feats).all()):
            raise Refused("features have non-finite values")
        if reply.value.samples != len(labels):
            raise Refused(f"the timing counts {reply.value.samples} samples, not {len(labels)}")

    def check_upload(
        self, i: int, reply: Reply[Timing], reference: Mapping[str, torch.Tensor]
    ) -> None:
        """Refuse worker ``i``'s uploaded weights unless they are ``reference``'s tensors and
        its timing counts the samples it joined with (the averages' weights)."""
        check_state(reply.message.tensors, reference, "uploaded weights")
        join = self.participants.joined.get(i)  # None: the operator dropped it this round
        if join is not None and reply.value.samples != join.samples:
            raise Refused(
                f"the upload counts {reply.value.samples} samples, the worker joined with "
                f"{join.samples}"
            )


Features = tuple[torch.Tensor, torch.Tensor]


def features_of(reply: Reply[Timing]) -> Features:
    """The (features, labels) of a Forward reply that passed :meth:`ServerJob.check_features`."""
    return reply.message.tensors["features"], reply.message.tensors["labels"]


def check_join(hello: Join, num_classes: int) -> None:
    """Refuse a join whose data the selection cannot use: one label count per class, adding up
    to its samples, and at least one sample (an all-zero label mix has no distribution)."""
    counts = hello.label_counts
    if len(counts) != num_classes:
        raise Refused(f"{len(counts)} label counts, but the dataset has {num_classes} classes")
    if hello.samples == 0:
        raise Refused("a worker without samples cannot train")
    if sum(counts) != hello.samples:
        raise Refused(f"the label counts add up to {sum(counts)}, not to {hello.samples} samples")


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
            alive,
            lambda i, it=it: Forward(round=r, iteration=it),
            Timing,
            check=lambda i, rep: job.check_features(i, rep, plan.batches[i]),
        )
        dropped += lost
        data = {i: features_of(rep) for i, rep in fwd.items()}
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
            + job.server_seconds(server_t.seconds, sum(len(labels) for _, labels in data.values()))
            + max((rep.value.total_s for rep in bwd.values()), default=0.0)
        )
        alive = workers.require([i for i in alive if i in bwd])
    job.update_estimates(usage, set(alive))
    ups, lost = await workers.call_many(
        alive,
        lambda i: Upload(round=r),
        Timing,
        check=lambda i, rep: job.check_upload(i, rep, bottom_state),
    )
    dropped += lost
    alive = workers.require(list(ups))
    vt += max(rep.value.total_s for rep in ups.values())
    for i, rep in ups.items():
        usage[i].add(rep.value)
    return SplitFit(plan, alive, dropped, vt, losses, usage, ups)
