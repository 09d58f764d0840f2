"""The federation coordinator every federated kind shares (SplitTrainingJob, FedPruneJob, ...).

:class:`Participants` is the server's view of its workers: joining and rejoining on the
job's ``join`` subject, parallel requests with per-request deadlines (a worker that misses
one is dropped from that round), the ``minWorkers`` rule, and permanent exclusion by the
operator's :class:`~edgeloom.api.messages.DropWorkers` on the ``control`` subject.
:class:`RunStore` checkpoints named groups of tensors (one object, a manifest says which tensor
belongs to which group) plus a typed state model, and restores both after a restart.
:func:`run_rounds` is the round loop: a method plugs in as a :class:`Strategy`, Flower-style
(configure the round, run it, aggregate), and the loop records each round, checkpoints and
reports through a callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from pydantic import BaseModel, Field

from edgeloom.api.base import ApiModel
from edgeloom.api.jobstate import CHECKPOINT_BUCKET, STATE_BUCKET, checkpoint_name, state_key
from edgeloom.api.messages import DropWorkers, JoinAck, JoinRequest, WorkersDropped
from edgeloom.runtime.bus import Bus, Message, RemoteError
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.reporter import JobFailed
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)

J = TypeVar("J", bound="JoinRequest")
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T", bound=BaseModel)
OutcomeT = TypeVar("OutcomeT", bound="RoundOutcome")
OutcomeT_co = TypeVar("OutcomeT_co", bound="RoundOutcome", covariant=True)
PlanT = TypeVar("PlanT")
FitT = TypeVar("FitT")

LOST = (TimeoutError, RemoteError, CodecError)
"""What a participant's failed request raises: it is dropped from the round, not the job."""
Tensors = dict[str, torch.Tensor]


@dataclass
class Reply(Generic[R]):
    """A participant's parsed reply and the message it came in (with its tensors)."""

    value: R
    message: Message


@dataclass
class Participants(Generic[J]):
    """Joined, excluded and reachable participants of one job; see the module docstring."""

    ctx: RoleContext[Any]
    join_model: type[J]
    total: int
    """Participants are indices ``0 .. total-1``."""
    min_participants: int
    deadline_s: float
    """Seconds each request may take before its participant is dropped from the round."""
    role: str = "worker"
    """The participants' role: they take requests on ``<job>.<role>.<index>``."""
    minimum_field: str = "participation.minWorkers"
    """The spec field ``min_participants`` comes from, for error messages."""
    joined: dict[int, J] = field(default_factory=dict)
    excluded: set[int] = field(default_factory=set)
    """Dropped for the rest of the job (by the operator): they may not rejoin."""
    _everyone: asyncio.Event = field(default_factory=asyncio.Event)

    def subject(self, index: int) -> str:
        """Where participant ``index`` takes requests."""
        return self.ctx.subject(self.role, str(index))

    async def listen(self) -> None:
        """Accept joins (also later ones: a restarted worker rejoins) and DropWorkers."""
        await self.ctx.bus.subscribe(self.ctx.subject("join"), self._on_join)
        await self.ctx.bus.subscribe(self.ctx.subject("control"), self._on_control)

    async def _on_join(self, msg: Message) -> None:
        hello = msg.parse(self.join_model)
        if hello.index >= self.total:
            await self.ctx.bus.respond(msg, JoinAck(accepted=False, reason="index out of range"))
            return
        if hello.index in self.excluded:
            reason = f"the operator dropped this {self.role} from the job"
            await self.ctx.bus.respond(msg, JoinAck(accepted=False, reason=reason, retire=True))
            return
        self.joined[hello.index] = hello
        await self.ctx.bus.respond(msg, JoinAck(accepted=True))
        if len(self.joined) >= self.total - len(self.excluded):
            self._everyone.set()

    async def _on_control(self, msg: Message) -> None:
        cmd = msg.parse(DropWorkers)
        unknown = [i for i in cmd.workers if not 0 <= i < self.total]
        if unknown:
            raise ValueError(f"workers {unknown} are not in this job")
        log.warning("dropping workers %s for the rest of the job: %s", cmd.workers, cmd.reason)
        self.exclude(cmd.workers)
        await self.ctx.bus.respond(msg, WorkersDropped(dropped=sorted(self.excluded)))

    async def wait_for_all(self, timeout_s: float) -> None:
        """Wait until every participant not excluded has joined; after ``timeout_s`` go on
        with those that did if they are at least ``min_participants``.

        Raises
        ------
        JobFailed
            Too few joined in time.
        """
        if len(self.joined) >= self.total - len(self.excluded):
            return
        try:
            await asyncio.wait_for(self._everyone.wait(), timeout_s)
        except TimeoutError:
            if len(self.joined) < self.min_participants:
                raise JobFailed(
                    f"only {len(self.joined)} of {self.total} workers joined within {timeout_s:g} s"
                ) from None
            log.warning("starting with %d of %d workers", len(self.joined), self.total)

    def exclude(self, indices: list[int]) -> None:
        """Stop using these participants for the rest of the job."""
        self.excluded.update(indices)
        for i in indices:
            self.joined.pop(i, None)

    def require(self, alive: list[int]) -> list[int]:
        """``alive`` unchanged, if it satisfies the minimum.

        Raises
        ------
        JobFailed
            Fewer than ``min_participants`` are left.
        """
        if len(alive) < self.min_participants:
            raise JobFailed(
                f"only {len(alive)} {self.role}s left, {self.minimum_field} is "
                f"{self.min_participants}"
            )
        return alive

    async def call(
        self, index: int, command: BaseModel, reply: type[R], tensors: Tensors | None = None
    ) -> Reply[R]:
        """One request to one participant within the deadline; raises one of :data:`LOST`."""
        msg = await self.ctx.bus.request(
            self.subject(index), command, tensors, timeout=self.deadline_s
        )
        return Reply(msg.parse(reply), msg)

    async def call_many(
        self,
        indices: list[int],
        command: Callable[[int], BaseModel],
        reply: type[R],
        tensors: Callable[[int], Tensors] | None = None,
    ) -> tuple[dict[int, Reply[R]], list[int]]:
        """The same kind of request to each participant in parallel: (replies, the lost)."""
        results = await asyncio.gather(
            *(self.call(i, command(i), reply, tensors(i) if tensors else None) for i in indices),
            return_exceptions=True,
        )
        replies: dict[int, Reply[R]] = {}
        lost: list[int] = []
        for i, result in zip(indices, results, strict=True):
            if isinstance(result, LOST):
                log.warning("%s %d dropped from this round: %s", self.role, i, result)
                lost.append(i)
            elif isinstance(result, BaseException):
                raise result
            else:
                replies[i] = result
        return replies, lost

    async def broadcast(self, command: BaseModel) -> None:
        """Best effort: send ``command`` to every participant that joined."""
        await asyncio.gather(
            *(self.ctx.bus.request(self.subject(i), command, timeout=5) for i in self.joined),
            return_exceptions=True,
        )


class CheckpointManifest(ApiModel):
    """Envelope of a checkpoint object: which tensors make up which group."""

    round: int = Field(ge=0, description="Rounds completed at the checkpoint.")
    groups: dict[str, list[str]] = Field(description="Group name -> its tensor names.")


@dataclass
class RunStore(Generic[T]):
    """One run's checkpoint (JetStream object store) and typed state (JetStream KV).

    A run is ``(namespace, name, run_id)`` (:mod:`edgeloom.api.jobstate`), so a restarted
    coordinator finds its own run and a re-created resource starts fresh.
    """

    bus: Bus
    state_model: type[T]
    key: str
    object_name: str

    @classmethod
    def of(cls, ctx: RoleContext[Any], state_model: type[T]) -> RunStore[T]:
        """The store of the run ``ctx`` belongs to."""
        run = (ctx.namespace, ctx.name, ctx.run_id)
        return cls(ctx.bus, state_model, state_key(*run), checkpoint_name(*run))

    def ref(self, completed: int) -> str:
        """How status names a checkpoint: ``bucket/object@round``."""
        return f"{CHECKPOINT_BUCKET}/{self.object_name}@{completed}"

    async def save(
        self, completed: int, groups: Mapping[str, Mapping[str, torch.Tensor]], state: T
    ) -> str:
        """Store the tensor ``groups`` (e.g. each model's state dict), then ``state``; the
        state goes last, so a restore never finds state newer than its weights."""
        manifest = CheckpointManifest(
            round=completed, groups={g: list(tensors) for g, tensors in groups.items()}
        )
        flat = {
            f"{group}/{name}": tensor
            for group, tensors in groups.items()
            for name, tensor in tensors.items()
        }
        await self.bus.put_object(CHECKPOINT_BUCKET, self.object_name, manifest, flat)
        kv = await self.bus.key_value(STATE_BUCKET)
        await kv.put(self.key, state)
        return self.ref(completed)

    async def load(self) -> tuple[T, dict[str, Tensors]] | None:
        """The last saved (state, tensor groups), or None when this run has none."""
        kv = await self.bus.key_value(STATE_BUCKET)
        state = await kv.get(self.key, self.state_model)
        if state is None:
            return None
        message = await self.bus.get_object(CHECKPOINT_BUCKET, self.object_name)
        manifest = message.parse(CheckpointManifest)
        groups: dict[str, Tensors] = {}
        for group, names in manifest.groups.items():
            missing = [n for n in names if f"{group}/{n}" not in message.tensors]
            if missing:
                raise CodecError(f"checkpoint {self.object_name}: {group} lacks {missing[:3]}")
            groups[group] = {n: message.tensors[f"{group}/{n}"] for n in names}
        return state, groups


@dataclass
class RoundOutcome:
    """What one round produced, whatever the method."""

    participants: list[int]
    dropped: list[int]
    virtual_time_s: float
    train_loss: float | None = None
    per_worker: dict[int, Any] = field(default_factory=dict)
    """Per-participant figures of this round, for the kind's metrics."""


class Strategy(Protocol[PlanT, FitT, OutcomeT_co]):
    """One federated method, Flower-style: the coordinator calls the three steps in turn."""

    async def configure(self, round: int) -> PlanT:
        """Choose this round's participants and their settings (the control step)."""
        ...

    async def fit(self, round: int, plan: PlanT) -> FitT:
        """Run the round's exchanges with the participants."""
        ...

    async def aggregate(self, round: int, fitted: FitT) -> OutcomeT_co:
        """Fold the participants' results into the global model; the round's outcome."""
        ...


async def run_round(strategy: Strategy[Any, Any, OutcomeT], round: int) -> OutcomeT:
    """configure → fit → aggregate of one round."""
    plan = await strategy.configure(round)
    fitted = await strategy.fit(round, plan)
    return await strategy.aggregate(round, fitted)


async def run_rounds(
    strategy: Strategy[Any, Any, OutcomeT],
    first: int,
    last: int,
    after_round: Callable[[int, OutcomeT], Awaitable[bool]],
) -> bool:
    """Rounds ``first .. last-1``; ``after_round(r, outcome)`` records, checkpoints and
    reports, and returns True to stop early (a target reached). Returns whether it stopped
    early."""
    for r in range(first, last):
        if await after_round(r, await run_round(strategy, r)):
            return True
    return False
