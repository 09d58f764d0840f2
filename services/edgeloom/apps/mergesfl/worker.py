"""SplitTrainingJob worker: the bottom model (or whole model for fedavg) on local data.

The worker joins the server, then answers commands on ``<job>.worker.<index>``: load weights,
forward a batch (features + labels out), backward a feature gradient, train locally, upload
weights, stop. Each reply carries the device time the command took under the worker's profile.

A command runs only if it is fresh (:class:`~edgeloom.runtime.federation.Freshness`: not a
replay, not from an earlier server session) and makes sense now: a Load for a round of this job
with batch bounds, learning rate and weights the spec allows, the other commands for the round
and iteration in progress. Anything else is refused with an error reply and changes nothing, so
a stray or replayed message cannot knock the worker out of its round.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from edgeloom.api.kinds.splittraining import SplitMethod, SplitTrainingJobSpec
from edgeloom.apps.mergesfl.messages import (
    COMMAND,
    Backward,
    Command,
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
from edgeloom.runtime.bus import Message
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.device import ComputeCost, DeviceClock, compute_timer
from edgeloom.runtime.federation import Freshness, Member, Refused, check_state, refuse
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)
Tensors = dict[str, torch.Tensor]


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
        # fedavg trains the whole model locally; the split methods train only the bottom
        self.whole_model = spec.method is SplitMethod.FEDAVG
        self.clock = DeviceClock(worker_profiles(spec)[ctx.index], spec.emulation)
        sample_shape = tuple(self.data.x.shape[1:])
        self.cost = ComputeCost.of(self.whole if self.whole_model else self.bottom, sample_shape)
        self.batches = Batches(self.data, seed=spec.training.seed * 100_003 + ctx.index)
        self.metrics = WorkerMetrics(ctx.metrics)
        self.freshness = Freshness()
        self.batch_size = 1
        self.optimizer: torch.optim.Optimizer | None = None
        self.features: torch.Tensor | None = None
        self.iteration = -1  # the iteration ``features`` belong to
        self.round = -1

    def hello(self) -> Join:
        """What this worker tells the server when it joins."""
        return Join(
            index=self.ctx.index,
            samples=len(self.data),
            label_counts=self.label_counts,
            profile=self.clock.profile,
        )

    async def answer(self, msg: Message) -> tuple[Command, Timing, Tensors | None]:
        """Check one command and run it: the command, its timing and the reply's tensors.

        Raises
        ------
        CodecError
            The command is malformed; :class:`~edgeloom.runtime.federation.Refused` when it
            is stale, replayed or wrong for the job or the round. Nothing has changed then.
        """
        try:
            cmd = COMMAND.validate_json(msg.envelope_json)
        except ValueError as err:
            raise CodecError(f"invalid command: {err}") from None
        if not msg.reply:
            raise Refused(f"{cmd.op} without a reply subject")
        self.freshness.check(cmd)
        reply: Tensors | None = None
        if isinstance(cmd, Load):
            timing = await self.load(cmd, msg.tensors)
        elif isinstance(cmd, Forward):
            timing, reply = await self.forward(cmd)
        elif isinstance(cmd, Backward):
            timing = await self.backward(cmd, msg.tensors)
        elif isinstance(cmd, TrainLocal):
            timing = await self.train_local(cmd)
        elif isinstance(cmd, Upload):
            timing, reply = await self.upload(cmd)
        else:
            assert isinstance(cmd, Stop)
            timing = Timing()
        self.freshness.accept(cmd)
        return cmd, timing, reply

    async def spend(self, timing: Timing, measured_s: float) -> Timing:
        self.metrics.compute.observe(timing.compute_s)
        await self.clock.spend(timing.total_s, already_waited_s=measured_s)
        return timing

    async def load(self, cmd: Load, tensors: Tensors) -> Timing:
        t = self.ctx.spec.training
        if cmd.whole_model != self.whole_model:
            raise Refused(f"this job's workers load the {self._module_name()} model only")
        if cmd.round >= t.rounds:
            raise Refused(f"round {cmd.round} is beyond the job's {t.rounds} rounds")
        if self.freshness.is_current(cmd) and cmd.round <= self.round:
            raise Refused(f"round {cmd.round} does not follow the loaded round {self.round}")
        if not t.min_batch_size <= cmd.batch_size <= t.max_batch_size:
            raise Refused(
                f"batch size {cmd.batch_size} outside {t.min_batch_size}..{t.max_batch_size}"
            )
        if cmd.learning_rate > max(t.learning_rate, t.lr_floor):
            raise Refused(f"learning rate {cmd.learning_rate} above the spec's")
        module = self.whole if self.whole_model else self.bottom
        check_state(tensors, module.state_dict(), "the weights to load")
        module.load_state_dict(tensors)
        self.optimizer = torch.optim.SGD(
            module.parameters(), lr=cmd.learning_rate, momentum=self.ctx.spec.training.momentum
        )
        self.batch_size, self.round, self.features = cmd.batch_size, cmd.round, None
        self.metrics.batch_size.set(cmd.batch_size)
        return await self.spend(
            Timing(download_s=self.clock.download_seconds(tensor_bytes(tensors))), 0.0
        )

    async def forward(self, cmd: Forward) -> tuple[Timing, Tensors]:
        self._expect_split(cmd.round, cmd.iteration)
        x, y = self.batches.next(self.batch_size)
        self.bottom.train()
        with compute_timer() as t:
            self.features = self.bottom(x)
        self.iteration = cmd.iteration
        out = {"features": self.features.detach(), "labels": y}
        timing = Timing(
            compute_s=self.clock.compute_seconds(
                t.seconds, self.cost.seconds(len(y), backward=False)
            ),
            upload_s=self.clock.upload_seconds(tensor_bytes(out)),
            samples=len(y),
        )
        return await self.spend(timing, t.seconds), out

    async def backward(self, cmd: Backward, tensors: Tensors) -> Timing:
        self._expect_split(cmd.round, cmd.iteration)
        grad = tensors.get("grad")
        if self.features is None or self.optimizer is None or cmd.iteration != self.iteration:
            raise Refused(f"backward of iteration {cmd.iteration} without its forward")
        if grad is None or grad.shape != self.features.shape or grad.dtype != self.features.dtype:
            raise Refused(f"grad must be {self.features.dtype} {tuple(self.features.shape)}")
        if not bool(torch.isfinite(grad).all()):
            raise Refused("grad has non-finite values")
        with compute_timer() as t:
            self.optimizer.zero_grad()
            self.features.backward(grad)
            self.optimizer.step()
        samples, self.features = len(self.features), None
        timing = Timing(
            compute_s=self.clock.compute_seconds(
                t.seconds, self.cost.seconds(samples, forward=False)
            ),
            download_s=self.clock.download_seconds(tensor_bytes(tensors)),
        )
        return await self.spend(timing, t.seconds)

    async def train_local(self, cmd: TrainLocal) -> Timing:
        self._expect_round(cmd.round)
        if not self.whole_model:
            raise Refused("this job's workers train split, not locally")
        if cmd.iterations > self.ctx.spec.training.iterations_per_round:
            raise Refused(f"{cmd.iterations} local iterations: more than the spec's")
        assert self.optimizer is not None  # created with the round's Load
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
        samples = cmd.iterations * min(self.batch_size, len(self.data))
        timing = Timing(
            compute_s=self.clock.compute_seconds(t.seconds, self.cost.seconds(samples)),
            samples=samples,
            loss=loss_sum / cmd.iterations,
        )
        return await self.spend(timing, t.seconds)

    async def upload(self, cmd: Upload) -> tuple[Timing, Tensors]:
        self._expect_round(cmd.round)
        module = self.whole if self.whole_model else self.bottom
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        timing = Timing(
            upload_s=self.clock.upload_seconds(tensor_bytes(state)), samples=len(self.data)
        )
        return await self.spend(timing, 0.0), state

    async def on_command(self, msg: Message) -> None:
        """The handler of ``<job>.worker.<index>``: answer the command, or refuse it."""
        try:
            cmd, timing, reply = await self.answer(msg)
        except CodecError as err:  # malformed or refused: answered, nothing changed
            await refuse(self.ctx.bus, msg, err)
            return
        await self.ctx.bus.respond(msg, timing, reply)
        self.metrics.tensor_bytes.inc(tensor_bytes(msg.tensors) + tensor_bytes(reply or {}))
        if isinstance(cmd, Stop):
            self.ctx.stop.set()

    async def serve(self) -> None:
        """Take commands, join, and answer them until stopped (or retired by the job)."""
        ctx = self.ctx
        await ctx.bus.subscribe(ctx.subject("worker", str(ctx.index)), self.on_command)
        if not await Member(ctx, self.hello()).join():
            return
        log.info("worker %d joined with %d samples", ctx.index, len(self.data))
        await ctx.stop.wait()

    def _module_name(self) -> str:
        return "whole" if self.whole_model else "bottom"

    def _expect_round(self, round_: int) -> None:
        if round_ != self.round:
            raise Refused(f"command for round {round_}, but round {self.round} is loaded")

    def _expect_split(self, round_: int, iteration: int) -> None:
        self._expect_round(round_)
        if self.whole_model:
            raise Refused("this job's workers train locally, not split")
        if iteration >= self.ctx.spec.training.iterations_per_round:
            raise Refused(f"iteration {iteration} is beyond the spec's iterations per round")


async def run(ctx: RoleContext[SplitTrainingJobSpec]) -> None:
    """The ``worker`` role."""
    await Worker(ctx).serve()
