"""SplitTrainingJob worker: the bottom model (or whole model for fedavg) on local data.

The worker joins the server, then answers commands on ``<job>.worker.<index>``: load weights,
forward a batch (features + labels out), backward a feature gradient, train locally, upload
weights, stop. Each reply carries the device time the command took under the worker's profile.
"""

from __future__ import annotations

import asyncio
import logging

import torch
from torch import nn

from edgeloom.api.kinds.splittraining import SplitTrainingJobSpec
from edgeloom.api.messages import JoinAck
from edgeloom.apps.mergesfl.messages import (
    COMMAND,
    Backward,
    Forward,
    Join,
    Load,
    Stop,
    Timing,
    TrainLocal,
    Upload,
)
from edgeloom.apps.mergesfl.metrics import WorkerMetrics
from edgeloom.apps.mergesfl.setup import build_models, build_problem, worker_profiles
from edgeloom.data.pair import TensorPair
from edgeloom.runtime.bus import Message, NoResponders
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.device import DeviceClock, compute_timer
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)
JOIN_RETRY_S = 0.5


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


class Batches:
    """Endless shuffled mini-batches of a local dataset (reshuffled every epoch)."""

    def __init__(self, data: TensorPair, seed: int) -> None:
        self.data = data
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(data), generator=self.gen)
        self.pos = 0

    def next(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = min(size, len(self.data))
        if self.pos + size > len(self.order):
            self.order = torch.randperm(len(self.data), generator=self.gen)
            self.pos = 0
        index = self.order[self.pos : self.pos + size]
        self.pos += size
        return self.data.x[index], self.data.y[index]


class Worker:
    """State of one worker between commands."""

    def __init__(self, ctx: RoleContext[SplitTrainingJobSpec]) -> None:
        spec = ctx.spec
        problem = build_problem(spec)
        self.ctx = ctx
        self.data = problem.worker_data(ctx.index)
        self.label_counts = problem.label_counts(ctx.index).tolist()
        self.bottom, self.top = build_models(spec, problem)
        self.whole = nn.Sequential(self.bottom, self.top)
        self.clock = DeviceClock(worker_profiles(spec)[ctx.index], spec.emulation)
        self.batches = Batches(self.data, seed=spec.training.seed * 100_003 + ctx.index)
        self.metrics = WorkerMetrics(ctx.metrics)
        self.batch_size = 1
        self.optimizer: torch.optim.Optimizer | None = None
        self.features: torch.Tensor | None = None
        self.round = -1

    async def spend(self, timing: Timing, measured_s: float) -> Timing:
        self.metrics.compute.observe(timing.compute_s)
        await self.clock.spend(timing.total_s, already_waited_s=measured_s)
        return timing

    async def load(self, cmd: Load, tensors: dict[str, torch.Tensor]) -> Timing:
        module = self.whole if cmd.whole_model else self.bottom
        module.load_state_dict(tensors)  # strict: a wrong key set raises, answered as an error
        self.optimizer = torch.optim.SGD(
            module.parameters(), lr=cmd.learning_rate, momentum=self.ctx.spec.training.momentum
        )
        self.batch_size, self.round, self.features = cmd.batch_size, cmd.round, None
        self.metrics.batch_size.set(cmd.batch_size)
        return await self.spend(
            Timing(download_s=self.clock.download_seconds(tensor_bytes(tensors))), 0.0
        )

    async def forward(self, cmd: Forward) -> tuple[Timing, dict[str, torch.Tensor]]:
        self._expect_round(cmd.round)
        x, y = self.batches.next(self.batch_size)
        self.bottom.train()
        with compute_timer() as t:
            self.features = self.bottom(x)
        out = {"features": self.features.detach(), "labels": y}
        timing = Timing(
            compute_s=self.clock.compute_seconds(t.seconds),
            upload_s=self.clock.upload_seconds(tensor_bytes(out)),
            samples=len(y),
        )
        return await self.spend(timing, t.seconds), out

    async def backward(self, cmd: Backward, tensors: dict[str, torch.Tensor]) -> Timing:
        self._expect_round(cmd.round)
        grad = tensors.get("grad")
        if self.features is None or self.optimizer is None:
            raise RuntimeError("backward without a preceding forward")
        if grad is None or grad.shape != self.features.shape or grad.dtype != self.features.dtype:
            raise CodecError(f"grad must be {self.features.dtype} {tuple(self.features.shape)}")
        with compute_timer() as t:
            self.optimizer.zero_grad()
            self.features.backward(grad)
            self.optimizer.step()
        self.features = None
        timing = Timing(
            compute_s=self.clock.compute_seconds(t.seconds),
            download_s=self.clock.download_seconds(tensor_bytes(tensors)),
        )
        return await self.spend(timing, t.seconds)

    async def train_local(self, cmd: TrainLocal) -> Timing:
        self._expect_round(cmd.round)
        if self.optimizer is None:
            raise RuntimeError("train_local before load")
        self.whole.train()
        loss_sum = 0.0
        with compute_timer() as t:
            for _ in range(cmd.iterations):
                x, y = self.batches.next(self.batch_size)
                self.optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.whole(x), y)
                loss.backward()
                self.optimizer.step()
                loss_sum += float(loss.detach())
        timing = Timing(
            compute_s=self.clock.compute_seconds(t.seconds),
            samples=cmd.iterations * min(self.batch_size, len(self.data)),
            loss=loss_sum / cmd.iterations,
        )
        return await self.spend(timing, t.seconds)

    async def upload(self, cmd: Upload, whole: bool) -> tuple[Timing, dict[str, torch.Tensor]]:
        self._expect_round(cmd.round)
        state = {
            k: v.detach().clone()
            for k, v in (self.whole if whole else self.bottom).state_dict().items()
        }
        timing = Timing(
            upload_s=self.clock.upload_seconds(tensor_bytes(state)), samples=len(self.data)
        )
        return await self.spend(timing, 0.0), state

    def _expect_round(self, round_: int) -> None:
        if round_ != self.round:
            raise RuntimeError(f"command for round {round_}, but round {self.round} is loaded")


async def join(ctx: RoleContext[SplitTrainingJobSpec], worker: Worker) -> bool:
    """Announce this worker until the server accepts it (the server may start later).

    Returns False when the server has dropped this worker for good.
    """
    hello = Join(
        index=ctx.index,
        samples=len(worker.data),
        label_counts=worker.label_counts,
        profile=worker.clock.profile,
    )
    while not ctx.stop.is_set():
        try:
            reply = await ctx.bus.request(ctx.subject("join"), hello, timeout=5)
        except (NoResponders, TimeoutError):
            await asyncio.sleep(JOIN_RETRY_S)
            continue
        ack = reply.parse(JoinAck)
        if ack.retire:
            log.warning("worker %d is no longer needed: %s", ctx.index, ack.reason)
            return False
        if not ack.accepted:
            raise RuntimeError(f"server refused worker {ctx.index}: {ack.reason}")
        return True
    return False


async def run(ctx: RoleContext[SplitTrainingJobSpec]) -> None:
    worker = Worker(ctx)
    whole_model = False

    async def on_command(msg: Message) -> None:
        nonlocal whole_model
        try:
            cmd = COMMAND.validate_json(msg.envelope_json)
        except ValueError as err:
            raise CodecError(f"invalid command: {err}") from None
        reply: dict[str, torch.Tensor] | None = None
        if isinstance(cmd, Load):
            whole_model = cmd.whole_model
            timing = await worker.load(cmd, msg.tensors)
        elif isinstance(cmd, Forward):
            timing, reply = await worker.forward(cmd)
        elif isinstance(cmd, Backward):
            timing = await worker.backward(cmd, msg.tensors)
        elif isinstance(cmd, TrainLocal):
            timing = await worker.train_local(cmd)
        elif isinstance(cmd, Upload):
            timing, reply = await worker.upload(cmd, whole_model)
        else:
            assert isinstance(cmd, Stop)
            timing = Timing()
        await ctx.bus.respond(msg, timing, reply)
        worker.metrics.tensor_bytes.inc(tensor_bytes(msg.tensors) + tensor_bytes(reply or {}))
        if isinstance(cmd, Stop):
            ctx.stop.set()

    await ctx.bus.subscribe(ctx.subject("worker", str(ctx.index)), on_command)
    if not await join(ctx, worker):
        return
    log.info("worker %d joined with %d samples", ctx.index, len(worker.data))
    await ctx.stop.wait()
