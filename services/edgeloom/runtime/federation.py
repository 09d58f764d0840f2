"""The federation coordinator every federated kind shares (SplitTrainingJob, FedPruneJob, ...).

:class:`Participants` is the server's view of its workers: joining and rejoining on the
job's ``join`` subject, parallel requests with per-request deadlines (a worker that misses
one, or whose reply fails the kind's checks, is dropped from that round), the ``minWorkers``
rule, and permanent exclusion by the operator's :class:`~edgeloom.api.messages.DropWorkers` on
the ``control`` subject. :class:`Member` is a participant's side of joining: it joins until
accepted, and joins again when a restarted coordinator calls for it (:class:`JoinCall`), so a
coordinator that resumes from a checkpoint waits for its participants instead of trusting a
list from before the restart. Requests that subclass :class:`Stamped` carry the coordinator's
session and a request id, which a participant's :class:`Freshness` checks to refuse stale and
replayed requests.
:class:`RunStore` checkpoints named groups of tensors (one object, a manifest says which tensor
belongs to which group) plus a typed state model, and restores both after a restart.
:func:`run_rounds` is the round loop: a method plugs in as a :class:`Strategy`, Flower-style
(configure the round, run it, aggregate), and the loop records each round, checkpoints and
reports through a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from edgeloom.api.base import ApiModel
from edgeloom.api.jobstate import JobBuckets, job_buckets
from edgeloom.api.messages import DropWorkers, JoinAck, JoinRequest, WorkersDropped
from edgeloom.runtime.bus import Bus, Message, NoResponders, RemoteError
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.reporter import JobFailed
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)

J = TypeVar("J", bound="JoinRequest")
C = TypeVar("C", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T", bound=BaseModel)
OutcomeT = TypeVar("OutcomeT", bound="RoundOutcome")
OutcomeT_co = TypeVar("OutcomeT_co", bound="RoundOutcome", covariant=True)
PlanT = TypeVar("PlanT")
FitT = TypeVar("FitT")

LOST = (TimeoutError, RemoteError, CodecError)
"""What a participant's failed request raises: it is dropped from the round, not the job."""
Tensors = dict[str, torch.Tensor]
CALL_INTERVAL_S = 1.0
"""How often a coordinator waiting for joins calls the participants it misses."""
JOIN_RETRY_S = 0.5
"""How soon a participant asks again when no coordinator answered its join."""
JOIN_REQUEST_TIMEOUT_S = 5.0
RETIRED_SESSIONS = 64
"""Earlier coordinator sessions a participant remembers, to refuse their requests."""
REASON_CHARS = 1024
"""The longest reason a JoinAck carries."""


class Refused(CodecError):
    """A well-formed message whose content is wrong for its receiver: stale, replayed, out of
    range or mis-shaped. It is refused as a malformed one is: the sender's request fails, and a
    participant whose reply is refused is dropped from the round (it is one of :data:`LOST`)."""


class Stamped(BaseModel):
    """A coordinator's request to one participant that the participant can tell fresh from
    stale: :meth:`Participants.call` fills in both fields (see :class:`Freshness`)."""

    session: str = Field(
        default="", max_length=64, description="The coordinator process that sent the request."
    )
    seq: int = Field(
        default=0, ge=0, description="Request id; grows with every request of the session."
    )


class JoinCall(BaseModel):
    """Coordinator -> participants on ``<job>.<role>.rejoin`` while it waits for joins: those
    it names should join (again). A restarted coordinator knows no participant until it does."""

    model_config = ConfigDict(extra="forbid")

    missing: list[int] = Field(description="Indices the coordinator has no join from.")


@dataclass
class Reply(Generic[R]):
    """A participant's parsed reply and the message it came in (with its tensors)."""

    value: R
    message: Message


Check = Callable[[int, Reply[R]], None]
"""A kind's semantic check of participant ``index``'s reply; raises :class:`Refused`."""


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
    check_join: Callable[[J], None] | None = None
    """The kind's semantic checks of a join (what its data says); raises :class:`Refused`."""
    joined: dict[int, J] = field(default_factory=dict)
    excluded: set[int] = field(default_factory=set)
    """Dropped for the rest of the job (by the operator): they may not rejoin."""
    session: str = field(default_factory=lambda: secrets.token_hex(8))
    """This coordinator process, named in every request it stamps."""
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _everyone: asyncio.Event = field(default_factory=asyncio.Event)

    def subject(self, index: int) -> str:
        """Where participant ``index`` takes requests."""
        return self.ctx.subject(self.role, str(index))

    async def listen(self) -> None:
        """Accept joins (also later ones: a restarted worker rejoins) and DropWorkers."""
        await self.ctx.bus.subscribe(self.ctx.subject("join"), self._on_join)
        await self.ctx.bus.subscribe(self.ctx.subject("control"), self._on_control)

    def _check(self, hello: J) -> None:
        if hello.index >= self.total:
            raise Refused(f"index {hello.index} out of range: the job has {self.total}")
        if self.check_join is not None:
            self.check_join(hello)

    async def _on_join(self, msg: Message) -> None:
        hello = msg.parse(self.join_model)
        if hello.index in self.excluded:
            reason = f"the operator dropped this {self.role} from the job"
            ack = JoinAck(accepted=False, reason=reason, retire=True)
        else:
            try:
                self._check(hello)
            except Refused as err:
                log.warning("refused a join as %s %d: %s", self.role, hello.index, err)
                ack = JoinAck(accepted=False, reason=str(err)[:REASON_CHARS])
            else:
                self.joined[hello.index] = hello
                ack = JoinAck(accepted=True)
        await self.ctx.bus.respond(msg, ack)
        if self._all_joined():
            self._everyone.set()

    async def _on_control(self, msg: Message) -> None:
        cmd = msg.parse(DropWorkers)
        unknown = [i for i in cmd.workers if not 0 <= i < self.total]
        if unknown:
            raise ValueError(f"workers {unknown} are not in this job")
        log.warning("dropping workers %s for the rest of the job: %s", cmd.workers, cmd.reason)
        self.exclude(cmd.workers)
        await self.ctx.bus.respond(msg, WorkersDropped(dropped=sorted(self.excluded)))

    def _missing(self) -> list[int]:
        return [i for i in range(self.total) if i not in self.joined and i not in self.excluded]

    def _all_joined(self) -> bool:
        return not self._missing()

    async def wait_for_all(self, timeout_s: float) -> None:
        """Wait until every participant not excluded has joined, calling those missing every
        :data:`CALL_INTERVAL_S` (participants that outlived a coordinator restart join again);
        after ``timeout_s`` go on with those that did if they are at least
        ``min_participants``.

        Raises
        ------
        JobFailed
            Too few joined in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._all_joined() and loop.time() < deadline:
            call = JoinCall(missing=self._missing())
            await self.ctx.bus.publish(self.ctx.subject(self.role, "rejoin"), call)
            wait_s = min(CALL_INTERVAL_S, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._everyone.wait(), wait_s)
        if self._all_joined():
            return
        if len(self.joined) < self.min_participants:
            raise JobFailed(
                f"only {len(self.joined)} of {self.total} workers joined within {timeout_s:g} s"
            )
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

    def stamp(self, command: C) -> C:
        """``command`` with this session and the next request id, when it is :class:`Stamped`."""
        if isinstance(command, Stamped):
            return command.model_copy(update={"session": self.session, "seq": next(self._seq)})
        return command

    async def call(
        self,
        index: int,
        command: BaseModel,
        reply: type[R],
        tensors: Tensors | None = None,
        check: Check[R] | None = None,
    ) -> Reply[R]:
        """One request to one participant within the deadline, its reply checked by ``check``;
        raises one of :data:`LOST`."""
        msg = await self.ctx.bus.request(
            self.subject(index), self.stamp(command), tensors, timeout=self.deadline_s
        )
        result = Reply(msg.parse(reply), msg)
        if check is not None:
            check(index, result)
        return result

    async def call_many(
        self,
        indices: list[int],
        command: Callable[[int], BaseModel],
        reply: type[R],
        tensors: Callable[[int], Tensors] | None = None,
        check: Check[R] | None = None,
    ) -> tuple[dict[int, Reply[R]], list[int]]:
        """The same kind of request to each participant in parallel: (replies, the lost).

        A participant whose request fails, or whose reply ``check`` refuses, is lost for this
        round, with one warning line that says why."""
        results = await asyncio.gather(
            *(
                self.call(i, command(i), reply, tensors(i) if tensors else None, check)
                for i in indices
            ),
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
            *(
                self.ctx.bus.request(self.subject(i), self.stamp(command), timeout=5)
                for i in self.joined
            ),
            return_exceptions=True,
        )


@dataclass
class Freshness:
    """A participant's memory of its coordinator's requests, to refuse stale and replayed ones.

    Within a coordinator session every request accepted must carry a larger ``seq`` than the
    last; a session not seen before (a restarted coordinator) replaces the current one, which is
    retired: its requests are refused from then on. Requests a participant refuses for their
    content do not count (:meth:`check` first, :meth:`accept` once the request has run).
    """

    session: str = ""
    last_seq: int = 0
    retired: dict[str, None] = field(default_factory=dict)
    """Earlier sessions, oldest first (at most :data:`RETIRED_SESSIONS`)."""

    def check(self, stamp: Stamped) -> None:
        """Raises :class:`Refused` when ``stamp`` is unstamped, stale or a replay."""
        if not stamp.session:
            raise Refused("the request carries no coordinator session")
        if stamp.session in self.retired:
            raise Refused(f"stale request of an earlier coordinator session {stamp.session}")
        if stamp.session == self.session and stamp.seq <= self.last_seq:
            raise Refused(
                f"stale request {stamp.seq}: request {self.last_seq} of this session was "
                "already accepted (a replay?)"
            )

    def is_current(self, stamp: Stamped) -> bool:
        """Whether ``stamp`` comes from the session of the last request accepted."""
        return stamp.session == self.session

    def accept(self, stamp: Stamped) -> None:
        """Remember ``stamp`` as the latest request accepted (checking it first)."""
        self.check(stamp)
        if stamp.session != self.session:
            if self.session:
                self.retired[self.session] = None
                while len(self.retired) > RETIRED_SESSIONS:
                    del self.retired[next(iter(self.retired))]
            self.session = stamp.session
        self.last_seq = stamp.seq


async def refuse(bus: Bus, request: Message, err: Exception) -> None:
    """Log a refused request as one warning line and answer it with an error (the requester's
    call raises :class:`~edgeloom.runtime.bus.RemoteError`)."""
    log.warning("refused a request on %s: %s", request.subject, err)
    if request.reply:
        await bus.publish(request.reply, "{}", error=f"refused: {err}")


def check_state(
    tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], what: str
) -> None:
    """Refuse model weights that are not ``reference``'s: the same names, shapes and dtypes,
    and only finite values (a NaN would poison every model averaged with it).

    Raises
    ------
    Refused
        Names ``what`` and the first tensor that differs.
    """
    if tensors.keys() != reference.keys():
        missing = sorted(reference.keys() - tensors.keys())[:3]
        unexpected = sorted(tensors.keys() - reference.keys())[:3]
        raise Refused(f"{what}: not the model's tensors (missing {missing}, extra {unexpected})")
    for name, want in reference.items():
        got = tensors[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise Refused(
                f"{what}: {name} is {got.dtype} {tuple(got.shape)}, "
                f"expected {want.dtype} {tuple(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise Refused(f"{what}: {name} has non-finite values")


@dataclass
class Member(Generic[J]):
    """A participant's side of joining: ``hello`` until the coordinator accepts it, and again
    whenever a coordinator calls for it (one that restarted and resumed from a checkpoint)."""

    ctx: RoleContext[Any]
    hello: J
    joined: bool = False

    async def join(self) -> bool:
        """Join, retrying while no coordinator answers (it may start later).

        Returns False when the job has dropped this participant for good, or on stop.

        Raises
        ------
        RuntimeError
            The coordinator refused the join (a participant that cannot take part).
        """
        ctx = self.ctx
        await ctx.bus.subscribe(ctx.subject(ctx.role, "rejoin"), self._on_call)
        while not ctx.stop.is_set():
            ack = await self._ask()
            if ack is None:
                await asyncio.sleep(JOIN_RETRY_S)
                continue
            if ack.retire:
                log.warning("%s %d is no longer needed: %s", ctx.role, ctx.index, ack.reason)
                return False
            if not ack.accepted:
                raise RuntimeError(f"the coordinator refused {ctx.identity}: {ack.reason}")
            self.joined = True
            return True
        return False

    async def _ask(self) -> JoinAck | None:
        """One join request; None when no coordinator answered."""
        try:
            reply = await self.ctx.bus.request(
                self.ctx.subject("join"), self.hello, timeout=JOIN_REQUEST_TIMEOUT_S
            )
        except (NoResponders, TimeoutError):
            return None
        return reply.parse(JoinAck)

    async def _on_call(self, msg: Message) -> None:
        call = msg.parse(JoinCall)
        if not self.joined or self.ctx.index not in call.missing:
            return
        ack = await self._ask()
        if ack is None or ack.accepted:
            return
        log.warning("%s: the coordinator refused the rejoin: %s", self.ctx.identity, ack.reason)
        if ack.retire:
            self.ctx.stop.set()


class CheckpointManifest(ApiModel):
    """Envelope of a checkpoint object: which tensors make up which group."""

    round: int = Field(ge=0, description="Rounds completed at the checkpoint.")
    groups: dict[str, list[str]] = Field(description="Group name -> its tensor names.")


@dataclass
class RunStore(Generic[T]):
    """One run's checkpoint (JetStream object store) and typed state (JetStream KV).

    The job's own buckets (:mod:`edgeloom.api.jobstate`) hold one entry per run id, so a
    restarted coordinator finds its own run and a re-created resource starts fresh.
    """

    bus: Bus
    state_model: type[T]
    buckets: JobBuckets
    run_id: str

    @classmethod
    def of(cls, ctx: RoleContext[Any], state_model: type[T]) -> RunStore[T]:
        """The store of the run ``ctx`` belongs to."""
        buckets = job_buckets(ctx.namespace, ctx.info.kind, ctx.name)
        return cls(ctx.bus, state_model, buckets, ctx.run_id)

    def ref(self, completed: int) -> str:
        """How status names a checkpoint: ``bucket/object@round``."""
        return f"{self.buckets.checkpoints}/{self.run_id}@{completed}"

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
        await self.bus.put_object(self.buckets.checkpoints, self.run_id, manifest, flat)
        kv = await self.bus.key_value(self.buckets.state)
        await kv.put(self.run_id, state)
        return self.ref(completed)

    async def load(self) -> tuple[T, dict[str, Tensors]] | None:
        """The last saved (state, tensor groups), or None when this run has none."""
        kv = await self.bus.key_value(self.buckets.state)
        state = await kv.get(self.run_id, self.state_model)
        if state is None:
            return None
        message = await self.bus.get_object(self.buckets.checkpoints, self.run_id)
        manifest = message.parse(CheckpointManifest)
        groups: dict[str, Tensors] = {}
        for group, names in manifest.groups.items():
            missing = [n for n in names if f"{group}/{n}" not in message.tensors]
            if missing:
                where = self.ref(manifest.round)
                raise CodecError(f"checkpoint {where}: {group} lacks {missing[:3]}")
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
