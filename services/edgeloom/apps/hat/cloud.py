"""HAT's cloud side: the middle blocks for many device sequences at once, over the bus.

:class:`CloudSessions` keeps one :class:`~edgeloom.algos.hat.speculative.MiddleSession` (a KV
cache) per device sequence (a :class:`~edgeloom.algos.hat.speculative.WholeSession` for the
baselines where tokens cross), within bounds: at most ``max_sessions`` sequences, at most
``max_positions`` positions each, at most ``max_tokens_per_request`` states per request. A
sequence idle for ``idle_timeout_s`` is dropped and its memory freed; a request over a bound is
refused with an error that says which bound, and the cloud keeps serving. :func:`serve_cloud`
answers :mod:`~edgeloom.apps.hat.messages` requests on one subject, running the blocks in a
worker thread so the connection stays responsive. :class:`RemoteMiddle` is the device's end: the
``Middle`` callable the speculative decoder calls, from its own thread, over the bus.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from pydantic import TypeAdapter

from edgeloom.algos.hat.speculative import Middle, MiddleSession, WholeSession, computed
from edgeloom.algos.hat.split import HatParts
from edgeloom.apps.hat.messages import (
    HIDDEN,
    TOKENS,
    Closed,
    CloseSession,
    Generated,
    GenerateRequest,
    MiddleReply,
    MiddleRequest,
    Opened,
    OpenSession,
)
from edgeloom.apps.hat.metrics import CloudMetrics
from edgeloom.runtime.bus import Bus, Message, NoResponders, RemoteError, Subscription
from edgeloom.runtime.codec import CodecError
from edgeloom.runtime.device import compute_timer

log = logging.getLogger(__name__)
T = TypeVar("T")

_REQUESTS: TypeAdapter[MiddleRequest | GenerateRequest | CloseSession] = TypeAdapter(
    MiddleRequest | GenerateRequest | CloseSession
)


class ReplicaGone(RemoteError):
    """No cloud replica answers where the sequence needs one."""


class SessionError(ValueError):
    """A request the cloud refuses: over a bound, an unknown session, a malformed tensor."""


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 64
    max_positions: int = 4096
    """Positions one sequence may cache (its KV memory bound)."""
    max_tokens_per_request: int = 1024
    idle_timeout_s: float = 300.0


@dataclass
class CloudSchedule:
    """A replica's emulated clock: it serves requests one at a time, each taking its measured
    compute x ``compute_factor`` (below 1 for a node faster than this machine).

    Requests come in the order they really arrive, each stamped with its emulated arrival;
    devices' clocks run independently, so a request stamped earlier than one already served
    waits behind it (the emulation's approximation of a first-come-first-served queue).
    """

    compute_factor: float = 1.0
    busy_until: float = 0.0

    def serve(self, arrive_at: float, measured_s: float) -> float:
        """When a request arriving at ``arrive_at`` and computing ``measured_s`` here is done."""
        self.busy_until = max(arrive_at, self.busy_until) + measured_s * self.compute_factor
        return self.busy_until


@dataclass(frozen=True)
class Served:
    """The middle states of one request, with its emulated cloud compute and finish time
    (None when the request carried no arrival time)."""

    states: torch.Tensor
    compute_s: float
    done_at: float | None


@dataclass(frozen=True)
class Answer:
    """A whole-model cloud's own answer (``cloud-only``): the tokens ``(1, k)``, the emulated
    compute, and when each token was done (None without an arrival time)."""

    tokens: torch.Tensor
    compute_s: float
    emitted_at: list[float] | None


@dataclass
class _Session:
    middle: MiddleSession
    last_used: float


class CloudSessions:
    """The middle blocks of ``parts`` for many sequences, each with its own cache; with
    ``whole``, every block on token ids (the baselines where tokens cross)."""

    def __init__(
        self,
        parts: HatParts,
        limits: SessionLimits = SessionLimits(),
        clock: Callable[[], float] = time.monotonic,
        schedule: CloudSchedule | None = None,
        whole: bool = False,
    ) -> None:
        self.parts, self.limits, self.clock = parts, limits, clock
        self.schedule = schedule or CloudSchedule()
        self.sessions: dict[str, _Session] = {}
        self.whole = whole
        self.carries = TOKENS if whole else HIDDEN
        """The name of the tensor its requests and replies carry."""
        self.dtype = torch.long if whole else next(parts.view.model.parameters()).dtype

    def middle(self, session: str, start: int, hidden: torch.Tensor) -> torch.Tensor:
        """The middle states for ``hidden`` (positions ``start, ...`` of ``session``)."""
        self._check_states(hidden)
        count = hidden.shape[1]
        if session not in self.sessions:
            if start != 0:
                raise SessionError(f"session {session!r} is unknown (expired or never started)")
            self.open(session)
        state = self.sessions[session]
        if start + count > self.limits.max_positions:
            raise SessionError(
                f"session {session!r} would hold {start + count} positions, over its bound of "
                f"{self.limits.max_positions}"
            )
        state.last_used = self.clock()
        try:
            return state.middle.forward(start, hidden)
        except ValueError as error:
            raise SessionError(f"session {session!r}: {error}") from None

    def answer(
        self,
        session: str,
        prompt: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Sequence[int] = (),
        arrive_at: float | None = None,
    ) -> Answer:
        """Greedy decoding of a new sequence in the cloud alone (``cloud-only``), each token
        timed by this thread's CPU time and, with ``arrive_at``, scheduled one after another on
        the emulated clock. Call it from one thread at a time."""
        if not self.whole:
            raise SessionError("this cloud runs the middle blocks: it cannot answer alone")
        self._check_states(prompt)
        if self.cached(session):
            raise SessionError(f"session {session!r} holds positions: an answer starts afresh")
        if prompt.shape[1] + max_new_tokens > self.limits.max_positions:
            raise SessionError(
                f"session {session!r} would hold {prompt.shape[1] + max_new_tokens} positions, "
                f"over its bound of {self.limits.max_positions}"
            )
        self.open(session)
        whole = self.sessions[session].middle
        assert isinstance(whole, WholeSession)
        tokens: list[int] = []
        times: list[float] = []
        measured = 0.0
        decoding = whole.generate(prompt, max_new_tokens, eos_token_ids)
        try:
            while True:
                with compute_timer() as timer:
                    token = next(decoding, None)
                if token is None:
                    break
                tokens.append(token)
                measured += timer.seconds
                if arrive_at is not None:
                    times.append(
                        self.schedule.serve(times[-1] if times else arrive_at, timer.seconds)
                    )
        finally:
            self.close(session)
        emitted = None if arrive_at is None else times
        return Answer(torch.tensor([tokens]), measured * self.schedule.compute_factor, emitted)

    def serve(
        self, session: str, start: int, hidden: torch.Tensor, arrive_at: float | None = None
    ) -> Served:
        """:meth:`middle`, timed by this thread's CPU time and scheduled on the emulated
        clock when ``arrive_at`` is given. Call it from one thread at a time."""
        with compute_timer() as timer:
            states = self.middle(session, start, hidden)
        done_at = None if arrive_at is None else self.schedule.serve(arrive_at, timer.seconds)
        return Served(states, timer.seconds * self.schedule.compute_factor, done_at)

    def open(self, session: str) -> None:
        """Start ``session`` with an empty cache (or keep it, opened twice)."""
        if session not in self.sessions:
            if len(self.sessions) >= self.limits.max_sessions:
                raise SessionError(
                    f"the cloud holds its maximum of {self.limits.max_sessions} sessions"
                )
            kind = WholeSession if self.whole else MiddleSession
            self.sessions[session] = _Session(kind(self.parts), self.clock())

    def cached(self, session: str) -> int:
        state = self.sessions.get(session)
        return state.middle.cache.length if state is not None else 0

    def close(self, session: str) -> int:
        """Forget ``session``; the bytes its cache held."""
        state = self.sessions.pop(session, None)
        return state.middle.cache.nbytes if state is not None else 0

    def expire(self) -> list[str]:
        """Drop the sessions idle for longer than the timeout; their names."""
        deadline = self.clock() - self.limits.idle_timeout_s
        idle = [name for name, state in self.sessions.items() if state.last_used < deadline]
        for name in idle:
            self.close(name)
        return idle

    def _check_states(self, hidden: torch.Tensor) -> None:
        if hidden.dtype != self.dtype:
            raise SessionError(f"{self.carries} must be {self.dtype}, got {hidden.dtype}")
        if self.whole:
            vocab = int(self.parts.view.config.vocab_size)
            if hidden.ndim != 2 or hidden.shape[0] != 1:
                raise SessionError(f"tokens must be (1, n), got {tuple(hidden.shape)}")
            if hidden.numel() and not 0 <= int(hidden.min()) <= int(hidden.max()) < vocab:
                raise SessionError(f"token ids must lie in [0, {vocab})")
        else:
            width = self.parts.hidden_size
            if hidden.ndim != 3 or hidden.shape[0] != 1 or hidden.shape[2] != width:
                raise SessionError(
                    f"hidden states must be (1, n, {width}), got {tuple(hidden.shape)}"
                )
            if not bool(torch.isfinite(hidden).all()):
                raise SessionError("hidden states must be finite")
        if not 1 <= hidden.shape[1] <= self.limits.max_tokens_per_request:
            raise SessionError(
                f"a request carries 1 to {self.limits.max_tokens_per_request} positions, "
                f"got {hidden.shape[1]}"
            )


async def serve_cloud(
    bus: Bus,
    subject: str,
    sessions: CloudSessions,
    stop: asyncio.Event,
    replica: str | None = None,
    sweep_s: float = 5.0,
    metrics: CloudMetrics | None = None,
) -> None:
    """Serve as one cloud replica until ``stop`` is set.

    New sequences are opened on ``subject``, which every replica of the service shares as a
    queue group; the replica's own requests come on ``subject.<replica>`` (a fresh random
    token by default). Requests are handled one at a time per subscription, as it delivers
    them, the blocks in a worker thread; idle sessions are swept every ``sweep_s`` seconds.
    """
    replica = replica or secrets.token_hex(8)
    own: list[Subscription] = []  # the replica's own subscription, once made

    def observe(extra: int) -> None:
        if metrics is not None:
            metrics.sessions.set(len(sessions.sessions))
            metrics.queue.set(extra + (own[0].pending_msgs if own else 0))

    async def refuse(message: Message, error: Exception) -> None:
        log.warning("refused a request on %s: %s", message.subject, error)
        if metrics is not None:
            metrics.refused.inc()
        if message.reply:
            await bus.publish(message.reply, "{}", error=f"refused: {error}")

    async def handle_open(message: Message) -> None:
        try:
            request = OpenSession.model_validate_json(message.envelope_json)
            sessions.open(request.session)
            observe(0)
            await bus.respond(message, Opened(replica=replica))
        except (SessionError, ValueError) as error:
            await refuse(message, error)

    async def handle(message: Message) -> None:
        try:
            request = _REQUESTS.validate_json(message.envelope_json)
            if isinstance(request, CloseSession):
                await bus.respond(message, Closed(freed_bytes=sessions.close(request.session)))
                return
            if set(message.tensors) != {sessions.carries}:
                raise SessionError(f"a request carries one tensor, {sessions.carries!r}")
            hidden = message.tensors[sessions.carries]
            observe(1)
            if isinstance(request, GenerateRequest):
                answer = await asyncio.to_thread(
                    sessions.answer,
                    request.session,
                    hidden,
                    request.max_new_tokens,
                    request.stop_token_ids,
                    request.arrive_at,
                )
                if metrics is not None:
                    metrics.compute.inc(answer.compute_s)
                    metrics.positions.inc(hidden.shape[1] + answer.tokens.shape[1])
                generated = Generated(compute_s=answer.compute_s, emitted_at=answer.emitted_at)
                await bus.respond(message, generated, {TOKENS: answer.tokens})
                return
            served = await asyncio.to_thread(
                sessions.serve, request.session, request.start, hidden, request.arrive_at
            )
            if metrics is not None:
                metrics.compute.inc(served.compute_s)
                metrics.positions.inc(hidden.shape[1])
            reply = MiddleReply(
                cached=sessions.cached(request.session),
                compute_s=served.compute_s,
                done_at=served.done_at,
            )
            await bus.respond(message, reply, {sessions.carries: served.states})
        except (SessionError, CodecError, ValueError) as error:
            await refuse(message, error)
        finally:
            observe(0)

    own.append(await bus.subscribe(f"{subject}.{replica}", handle))
    subscriptions = [own[0], await bus.subscribe(subject, handle_open, queue="cloud")]
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), sweep_s)
            except TimeoutError:
                if expired := sessions.expire():
                    log.info("expired %d idle sessions", len(expired))
                    observe(0)
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()


async def open_session(bus: Bus, subject: str, session: str, timeout_s: float = 30.0) -> str:
    """Open ``session`` on whichever replica takes it; the subject of that replica."""
    try:
        reply = await bus.request(subject, OpenSession(session=session), timeout=timeout_s)
    except NoResponders:
        raise ReplicaGone("no cloud replica is serving; is the service's cloud up?") from None
    return f"{subject}.{reply.parse(Opened).replica}"


class RemoteMiddle:
    """The cloud's middle blocks for one device sequence, a
    :class:`~edgeloom.algos.hat.speculative.Middle` for a decoder in a worker thread.

    ``loop`` is the event loop the bus runs on; a request's future fails after ``timeout_s``;
    ``carries`` names the tensor of the requests (token ids for a whole-model cloud).
    """

    def __init__(
        self,
        bus: Bus,
        subject: str,
        session: str,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float = 30.0,
        carries: str = HIDDEN,
    ) -> None:
        self.bus, self.subject, self.session = bus, subject, session
        self.loop, self.timeout_s, self.carries = loop, timeout_s, carries
        self.bytes_sent = self.bytes_received = 0

    def submit(self, start: int, hidden: torch.Tensor) -> Future[torch.Tensor]:
        return asyncio.run_coroutine_threadsafe(self.request(start, hidden), self.loop)

    def submit_at(self, start: int, hidden: torch.Tensor, arrive_at: float) -> Future[Served]:
        """:meth:`submit` for an emulated device: the cloud schedules the request at
        ``arrive_at`` on its emulated clock and says when it is done."""
        return asyncio.run_coroutine_threadsafe(self.served(start, hidden, arrive_at), self.loop)

    def answer_at(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Sequence[int],
        arrive_at: float,
    ) -> Future[Answer]:
        """The cloud's greedy answer alone (``cloud-only``) to ``prompt`` arriving at
        ``arrive_at``."""
        request = self.answered(prompt, max_new_tokens, eos_token_ids, arrive_at)
        return asyncio.run_coroutine_threadsafe(request, self.loop)

    async def answered(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Sequence[int],
        arrive_at: float | None = None,
    ) -> Answer:
        envelope = GenerateRequest(
            session=self.session,
            max_new_tokens=max_new_tokens,
            stop_token_ids=list(eos_token_ids),
            arrive_at=arrive_at,
        )
        reply = await self._request(envelope, prompt, self.timeout_s * (1 + max_new_tokens / 64))
        answer = reply.parse(Generated)
        tokens = reply.tensors.get(TOKENS)
        if tokens is None or tokens.dtype != torch.long or tokens.ndim != 2:
            raise CodecError("the cloud's answer holds no tokens (1, k)")
        if not 1 <= tokens.shape[1] <= max_new_tokens:
            raise CodecError(f"the cloud answered {tokens.shape[1]} tokens for {max_new_tokens}")
        times = answer.emitted_at
        if (arrive_at is None) != (times is None) or (times and len(times) != tokens.shape[1]):
            raise CodecError("the cloud's answer does not follow the request's emulation")
        self.bytes_received += tokens.numel() * tokens.element_size()
        return Answer(tokens, answer.compute_s, times)

    async def _request(
        self,
        envelope: MiddleRequest | GenerateRequest,
        tensor: torch.Tensor,
        timeout_s: float | None = None,
    ) -> Message:
        """``envelope`` with ``tensor``; the reply within ``timeout_s`` (the middle's own by
        default; a whole answer gets it once more per 64 tokens)."""
        sent = tensor.detach().clone().contiguous()  # inference-mode tensors, shared memory
        try:
            reply = await self.bus.request(
                self.subject, envelope, {self.carries: sent}, timeout=timeout_s or self.timeout_s
            )
        except NoResponders:
            raise ReplicaGone(
                "the cloud replica that held this sequence is gone; send the request again"
            ) from None
        self.bytes_sent += sent.numel() * sent.element_size()
        return reply

    async def request(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        return (await self.served(start, hidden)).states

    async def served(
        self, start: int, hidden: torch.Tensor, arrive_at: float | None = None
    ) -> Served:
        envelope = MiddleRequest(session=self.session, start=start, arrive_at=arrive_at)
        reply = await self._request(envelope, hidden)
        answer = reply.parse(MiddleReply)
        result = reply.tensors.get(self.carries)
        if result is None or result.shape != hidden.shape or result.dtype != hidden.dtype:
            got = None if result is None else (tuple(result.shape), result.dtype)
            raise CodecError(f"the cloud's reply holds {got}, not {tuple(hidden.shape)}")
        if (arrive_at is None) != (answer.done_at is None):
            raise CodecError("the cloud's reply does not follow the request's emulation")
        self.bytes_received += result.numel() * result.element_size()
        return Served(result, answer.compute_s, answer.done_at)

    async def close(self) -> int:
        reply = await self.bus.request(
            self.subject, CloseSession(session=self.session), timeout=self.timeout_s
        )
        return reply.parse(Closed).freed_bytes


class EmulatedMiddle(Middle, Protocol):
    """A :class:`Middle` that also takes requests stamped with an emulated arrival time."""

    def submit_at(self, start: int, hidden: torch.Tensor, arrive_at: float) -> Future[Served]: ...

    def answer_at(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Sequence[int],
        arrive_at: float,
    ) -> Future[Answer]: ...


class CloudLink(Protocol):
    """How a device reaches the cloud: a :class:`Middle` per sequence, and its release."""

    def middle(self, session: str) -> EmulatedMiddle: ...

    async def close(self, session: str) -> None: ...


class BusCloud:
    """The cloud over the bus, its replicas sharing ``subject`` (:func:`serve_cloud`), its
    requests carrying the tensor ``carries``."""

    def __init__(
        self,
        bus: Bus,
        subject: str,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float = 30.0,
        carries: str = HIDDEN,
    ) -> None:
        self.bus, self.subject, self.loop, self.timeout_s = bus, subject, loop, timeout_s
        self.carries = carries
        self.routes: dict[str, str] = {}

    def middle(self, session: str) -> RemoteMiddle:
        """Open ``session`` on a replica and return its end; called from a worker thread (the
        decoder's), never from the loop's."""
        opening = open_session(self.bus, self.subject, session, self.timeout_s)
        route = asyncio.run_coroutine_threadsafe(opening, self.loop).result()
        self.routes[session] = route
        return RemoteMiddle(self.bus, route, session, self.loop, self.timeout_s, self.carries)

    async def close(self, session: str) -> None:
        """Free the sequence's cache; when the cloud cannot be told, its idle sweep frees it."""
        route = self.routes.pop(session, None)
        if route is None:
            return
        try:
            await RemoteMiddle(self.bus, route, session, self.loop, self.timeout_s).close()
        except (RemoteError, TimeoutError, CodecError) as error:
            log.warning("could not close session %s (the cloud expires it): %s", session, error)


class LocalCloud:
    """The cloud's sessions in this process (one sequence's blocks at a time)."""

    def __init__(self, sessions: CloudSessions) -> None:
        self.sessions = sessions
        self._compute = threading.Lock()

    def middle(self, session: str) -> _LocalMiddle:
        return _LocalMiddle(self, session)

    async def close(self, session: str) -> None:
        self.sessions.close(session)


@dataclass
class _LocalMiddle:
    cloud: LocalCloud
    session: str

    def submit(self, start: int, hidden: torch.Tensor) -> Future[torch.Tensor]:
        def run() -> torch.Tensor:
            with self.cloud._compute:
                return self.cloud.sessions.middle(self.session, start, hidden)

        return computed(run)

    def submit_at(self, start: int, hidden: torch.Tensor, arrive_at: float) -> Future[Served]:
        return self._at_once(lambda s: s.serve(self.session, start, hidden, arrive_at))

    def answer_at(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Sequence[int],
        arrive_at: float,
    ) -> Future[Answer]:
        return self._at_once(
            lambda s: s.answer(self.session, prompt, max_new_tokens, eos_token_ids, arrive_at)
        )

    def _at_once(self, call: Callable[[CloudSessions], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            with self.cloud._compute:
                future.set_result(call(self.cloud.sessions))
        except BaseException as error:  # handed to whoever waits on the future
            future.set_exception(error)
        return future
