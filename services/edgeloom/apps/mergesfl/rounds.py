"""One training round per method, on the server side.

``mergesfl``: selected workers run their bottom models in parallel; the server merges their
features into one mixed batch, takes one top-model step and returns each worker its rescaled
gradient slice; bottoms are aggregated weighted by batch size. Ablations: without feature
merging the shared top model steps on each worker's batch in turn; without batch regulation
every worker gets ``B / K``.
``splitfed`` (SplitFed V1, Thapa et al.): the same exchange, but the server keeps one top-model
copy per worker, trained on that worker's features only; tops and bottoms are averaged by
sample count each round.
``sfl`` (vanilla split learning): workers train one after another, each starting from the
previous one's bottom model; the round's device time is the sum of theirs.
``fedavg``: every worker trains the whole model locally; models are averaged by sample count.

Device time of a parallel round is the load (slowest download), then per iteration the slowest
worker's forward + upload, the server's compute, and the slowest download + backward, then the
slowest upload.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from edgeloom.algos.mergesfl import (
    MergeSFLConfig,
    aggregate_bottom_models,
    merge_features,
    select_workers,
    split_gradients,
)
from edgeloom.algos.mergesfl.baselines import (
    average_state_dicts,
    random_select,
    uniform_batch_sizes,
)
from edgeloom.api.kinds.splittraining import SplitMethod, SplitTrainingJobSpec
from edgeloom.apps.mergesfl.messages import (
    Backward,
    Forward,
    Join,
    Load,
    Timing,
    TrainLocal,
    Upload,
)
from edgeloom.apps.mergesfl.setup import Problem, learning_rate
from edgeloom.runtime.bus import Message, RemoteError
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.device import compute_timer
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)
ESTIMATE_SMOOTHING = 0.5


class JobFailed(RuntimeError):
    """The job cannot go on (too few workers left)."""


@dataclass
class Reply:
    timing: Timing
    message: Message


@dataclass
class RoundOutcome:
    participants: list[int]
    dropped: list[int]
    virtual_time_s: float
    train_loss: float | None
    per_worker: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    """worker -> (batch size, compute seconds, transfer seconds) of this round."""


@dataclass
class _Usage:
    batch: int
    compute_s: float = 0.0
    transfer_s: float = 0.0
    samples: int = 0

    def add(self, t: Timing) -> None:
        self.compute_s += t.compute_s
        self.transfer_s += t.upload_s + t.download_s
        self.samples += t.samples


@dataclass
class ServerJob:
    """Server-side view of the job: models, known workers and their measured speed."""

    ctx: RoleContext
    problem: Problem
    bottom: nn.Sequential
    top: nn.Sequential
    rng: np.random.Generator
    workers: dict[int, Join] = field(default_factory=dict)
    estimates: dict[int, tuple[float, float]] = field(default_factory=dict)
    """worker -> (per-sample compute s, per-sample transfer s), smoothed over rounds."""
    excluded: set[int] = field(default_factory=set)
    """Workers dropped for the rest of the job (by the operator); they may not rejoin."""
    bytes_offset: int = 0

    @property
    def spec(self) -> SplitTrainingJobSpec:
        return self.ctx.spec

    @property
    def bytes_total(self) -> int:
        return self.bytes_offset + self.ctx.bus.bytes_sent + self.ctx.bus.bytes_received

    async def call_many(
        self,
        indices: list[int],
        command: Callable[[int], BaseModel],
        tensors: Callable[[int], dict[str, torch.Tensor]] | None = None,
    ) -> tuple[dict[int, Reply], list[int]]:
        """Send one command to each worker in parallel; (replies, workers that failed)."""
        timeout = self.spec.participation.round_deadline_seconds

        async def one(i: int) -> Reply:
            msg = await self.ctx.bus.request(
                self.ctx.subject("worker", str(i)),
                command(i),
                tensors(i) if tensors else None,
                timeout=timeout,
            )
            return Reply(msg.parse(Timing), msg)

        results = await asyncio.gather(*(one(i) for i in indices), return_exceptions=True)
        replies, lost = {}, []
        for i, result in zip(indices, results, strict=True):
            if isinstance(result, (TimeoutError, RemoteError, CodecError)):
                log.warning("worker %d dropped from this round: %s", i, result)
                lost.append(i)
            elif isinstance(result, BaseException):
                raise result
            else:
                replies[i] = result
        return replies, lost

    def drop(self, indices: list[int]) -> None:
        """Stop using these workers for the rest of the job."""
        self.excluded.update(indices)
        for i in indices:
            self.workers.pop(i, None)
            self.estimates.pop(i, None)

    async def broadcast(self, command: BaseModel) -> None:
        """Best effort: send ``command`` to every worker that joined."""
        await asyncio.gather(
            *(
                self.ctx.bus.request(self.ctx.subject("worker", str(i)), command, timeout=5)
                for i in self.workers
            ),
            return_exceptions=True,
        )

    def require(self, alive: list[int]) -> list[int]:
        minimum = self.spec.participation.min_workers
        if len(alive) < minimum:
            raise JobFailed(
                f"only {len(alive)} workers left, participation.minWorkers is {minimum}"
            )
        return alive

    def plan(self) -> tuple[list[int], dict[int, int]]:
        """Workers for the next round and their batch sizes (the control step)."""
        spec, t = self.spec, self.spec.training
        candidates = sorted(self.workers)  # the dead are retried: a restarted worker returns
        k = min(t.workers_per_round or len(candidates), len(candidates))
        self.require(candidates)
        known = all(i in self.estimates for i in candidates)
        if spec.method is SplitMethod.MERGESFL and known:
            dists = [
                label_distribution_from_counts(self.workers[i].label_counts) for i in candidates
            ]
            config = MergeSFLConfig(
                total_batch_size=t.total_batch_size,
                min_batch_size=t.min_batch_size,
                max_batch_size=t.max_batch_size,
            )
            choice = select_workers(
                dists,
                [self.estimates[i][0] for i in candidates],
                [self.estimates[i][1] for i in candidates],
                k,
                config,
                self.rng,
            )
            chosen = [candidates[j] for j in choice.workers]
            batches = dict(zip(chosen, choice.batch_sizes, strict=True))
        else:
            chosen = sorted(candidates[j] for j in random_select(len(candidates), k, self.rng))
            batches = {}
        if not batches or not spec.ablation.batch_regulation:
            sizes = uniform_batch_sizes(
                t.total_batch_size, len(chosen), t.min_batch_size, t.max_batch_size
            )
            batches = dict(zip(chosen, sizes, strict=True))
        return chosen, batches

    def update_estimates(self, usage: dict[int, _Usage], feature_transfers: set[int]) -> None:
        """Smooth each worker's per-sample compute and feature-transfer time."""
        for i, u in usage.items():
            if u.samples == 0 or i not in feature_transfers:
                continue
            new = (u.compute_s / u.samples, u.transfer_s / u.samples)
            old = self.estimates.get(i, new)
            a = ESTIMATE_SMOOTHING
            self.estimates[i] = (a * new[0] + (1 - a) * old[0], a * new[1] + (1 - a) * old[1])

    def check_features(self, i: int, msg: Message, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = msg.tensors.get("features"), msg.tensors.get("labels")
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


def label_distribution_from_counts(counts: list[int]) -> np.ndarray:
    total = max(sum(counts), 1)
    return np.asarray(counts, dtype=np.float64) / total


def _sgd(params, lr: float, spec: SplitTrainingJobSpec) -> torch.optim.SGD:  # type: ignore[no-untyped-def]
    return torch.optim.SGD(params, lr=lr, momentum=spec.training.momentum)


def _step_on(
    top: nn.Module, opt: torch.optim.Optimizer, feats: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """One top-model step on one worker's features; returns the feature gradient and loss."""
    f = feats.detach().requires_grad_(True)
    top.train()
    opt.zero_grad()
    loss = nn.functional.cross_entropy(top(f), labels)
    loss.backward()
    opt.step()
    return f.grad, float(loss.detach())  # type: ignore[return-value]


async def split_round(job: ServerJob, r: int) -> RoundOutcome:
    """mergesfl (with its ablations) and splitfed: parallel split training for one round."""
    spec = job.spec
    chosen, batches = job.plan()
    lr = learning_rate(spec, r)
    merged = spec.method is SplitMethod.MERGESFL and spec.ablation.feature_merging
    per_worker_tops = spec.method is SplitMethod.SPLITFED
    bottom_state = job.bottom.state_dict()
    loads, dropped = await job.call_many(
        chosen,
        lambda i: Load(round=r, batch_size=batches[i], learning_rate=lr),
        lambda i: bottom_state,
    )
    usage = {i: _Usage(batches[i]) for i in loads}
    for i, rep in loads.items():
        usage[i].add(rep.timing)
    vt = max((rep.timing.total_s for rep in loads.values()), default=0.0)
    alive = job.require(list(loads))
    tops = {i: copy.deepcopy(job.top) for i in alive} if per_worker_tops else {}
    opts = {i: _sgd(tops[i].parameters(), lr, spec) for i in tops}
    top_opt = _sgd(job.top.parameters(), lr, spec)
    losses: list[float] = []
    for it in range(spec.training.iterations_per_round):
        fwd, lost = await job.call_many(alive, lambda i, it=it: Forward(round=r, iteration=it))
        dropped += lost
        data = {}
        for i, rep in fwd.items():
            try:
                data[i] = job.check_features(i, rep.message, batches[i])
            except CodecError as err:
                log.warning("%s", err)
                dropped.append(i)
        alive = job.require([i for i in alive if i in data])
        with compute_timer() as server_t:
            if merged:
                feats, labels, slices = merge_features(
                    [data[i][0] for i in alive], [data[i][1] for i in alive]
                )
                top_opt.zero_grad()
                job.top.train()
                loss = nn.functional.cross_entropy(job.top(feats), labels)
                loss.backward()
                top_opt.step()
                losses.append(float(loss.detach()))
                sizes = [len(data[i][1]) for i in alive]
                grads = dict(zip(alive, split_gradients(feats.grad, slices, sizes), strict=True))
            else:
                grads = {}
                for i in alive:
                    top, opt = (tops[i], opts[i]) if per_worker_tops else (job.top, top_opt)
                    grads[i], loss_i = _step_on(top, opt, *data[i])
                    losses.append(loss_i)
        bwd, lost = await job.call_many(
            alive,
            lambda i, it=it: Backward(round=r, iteration=it),
            lambda i, g=grads: {"grad": g[i]},
        )
        dropped += lost
        for i in bwd:
            usage[i].add(fwd[i].timing)
            usage[i].add(bwd[i].timing)
        vt += (
            max(fwd[i].timing.total_s for i in alive)
            + server_t.seconds
            + max((rep.timing.total_s for rep in bwd.values()), default=0.0)
        )
        alive = job.require([i for i in alive if i in bwd])
    job.update_estimates(usage, set(alive))
    ups, lost = await job.call_many(alive, lambda i: Upload(round=r))
    dropped += lost
    alive = job.require(list(ups))
    vt += max(rep.timing.total_s for rep in ups.values())
    states = [ups[i].message.tensors for i in alive]
    if spec.method is SplitMethod.MERGESFL:
        job.bottom.load_state_dict(aggregate_bottom_models(states, [batches[i] for i in alive]))
    else:
        samples = [float(ups[i].timing.samples) for i in alive]
        job.bottom.load_state_dict(average_state_dicts(states, samples))
        job.top.load_state_dict(average_state_dicts([tops[i].state_dict() for i in alive], samples))
    for i, rep in ups.items():
        usage[i].add(rep.timing)
    return RoundOutcome(
        alive,
        sorted(set(dropped)),
        vt,
        _mean(losses),
        {i: (u.batch, u.compute_s, u.transfer_s) for i, u in usage.items()},
    )


async def sequential_round(job: ServerJob, r: int) -> RoundOutcome:
    """sfl: each selected worker in turn trains bottom + server top for the whole round."""
    spec = job.spec
    chosen, batches = job.plan()
    lr = learning_rate(spec, r)
    order = [chosen[j] for j in job.rng.permutation(len(chosen))]
    top_opt = _sgd(job.top.parameters(), lr, spec)
    vt, dropped, done, losses = 0.0, [], [], []
    usage: dict[int, _Usage] = {}
    for i in order:
        try:
            vt += await _train_one_in_turn(job, i, r, lr, batches[i], top_opt, losses, usage)
            done.append(i)
        except (TimeoutError, RemoteError, CodecError) as err:
            log.warning("worker %d dropped from this round: %s", i, err)
            dropped.append(i)
    job.require(done)
    job.update_estimates(usage, set(done))
    return RoundOutcome(
        done,
        dropped,
        vt,
        _mean(losses),
        {i: (u.batch, u.compute_s, u.transfer_s) for i, u in usage.items()},
    )


async def _train_one_in_turn(
    job: ServerJob,
    i: int,
    r: int,
    lr: float,
    batch: int,
    top_opt: torch.optim.Optimizer,
    losses: list[float],
    usage: dict[int, _Usage],
) -> float:
    spec, bus, timeout = job.spec, job.ctx.bus, job.spec.participation.round_deadline_seconds
    subject = job.ctx.subject("worker", str(i))

    async def call(cmd: BaseModel, tensors: dict[str, torch.Tensor] | None = None) -> Reply:
        msg = await bus.request(subject, cmd, tensors, timeout=timeout)
        reply = Reply(msg.parse(Timing), msg)
        usage.setdefault(i, _Usage(batch)).add(reply.timing)
        return reply

    vt = (
        await call(Load(round=r, batch_size=batch, learning_rate=lr), job.bottom.state_dict())
    ).timing.total_s
    for it in range(spec.training.iterations_per_round):
        fwd = await call(Forward(round=r, iteration=it))
        feats, labels = job.check_features(i, fwd.message, batch)
        with compute_timer() as server_t:
            grad, loss = _step_on(job.top, top_opt, feats, labels)
        losses.append(loss)
        bwd = await call(Backward(round=r, iteration=it), {"grad": grad})
        vt += fwd.timing.total_s + server_t.seconds + bwd.timing.total_s
    up = await call(Upload(round=r))
    job.bottom.load_state_dict(up.message.tensors)
    return vt + up.timing.total_s


async def fedavg_round(job: ServerJob, r: int) -> RoundOutcome:
    """fedavg: whole-model local training on every selected worker, averaged by samples."""
    spec = job.spec
    chosen, batches = job.plan()
    whole = nn.Sequential(job.bottom, job.top)
    state = whole.state_dict()
    lr = learning_rate(spec, r)
    loads, dropped = await job.call_many(
        chosen,
        lambda i: Load(round=r, batch_size=batches[i], learning_rate=lr, whole_model=True),
        lambda i: state,
    )
    trains, lost = await job.call_many(
        job.require(list(loads)),
        lambda i: TrainLocal(round=r, iterations=spec.training.iterations_per_round),
    )
    dropped += lost
    ups, lost = await job.call_many(job.require(list(trains)), lambda i: Upload(round=r))
    dropped += lost
    alive = job.require(list(ups))
    whole.load_state_dict(
        average_state_dicts(
            [ups[i].message.tensors for i in alive], [float(ups[i].timing.samples) for i in alive]
        )
    )
    per_worker, vt = {}, 0.0
    for i in alive:
        steps = (loads[i].timing, trains[i].timing, ups[i].timing)
        vt = max(vt, sum(t.total_s for t in steps))
        per_worker[i] = (
            batches[i],
            sum(t.compute_s for t in steps),
            sum(t.upload_s + t.download_s for t in steps),
        )
    return RoundOutcome(
        alive,
        sorted(set(dropped)),
        vt,
        _mean([trains[i].timing.loss for i in alive if trains[i].timing.loss is not None]),
        per_worker,
    )


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 5) if values else None


ROUNDS: dict[SplitMethod, Callable[[ServerJob, int], Awaitable[RoundOutcome]]] = {
    SplitMethod.MERGESFL: split_round,
    SplitMethod.SPLITFED: split_round,
    SplitMethod.SFL: sequential_round,
    SplitMethod.FEDAVG: fedavg_round,
}
