"""Every role's message handlers against schema-valid but wrong messages (hypothesis).

The roles run for real (the SplitTrainingJob server's participants and strategies, the worker,
the EchoService) on the real :class:`~edgeloom.runtime.bus.Bus`, over an in-memory NATS
(:class:`LoopbackNats`) instead of a server, so the fuzzer stays fast and in the unit suite.
Each example sends the wrong messages, then checks that the role survived and still gives the
right answer to the valid message that follows. The PruneJob pruner takes no messages.
The same attacks against real processes over a real nats-server:
``tests/integration/test_splittraining_resilience.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import nats
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from edgeloom.api.kinds.splittraining import KIND as SPLIT
from edgeloom.api.kinds.splittraining import SplitMethod, SplitTrainingJobSpec
from edgeloom.api.messages import JoinAck
from edgeloom.api.resource import Resource, parse_resource
from edgeloom.apps.mergesfl import server as server_app
from edgeloom.apps.mergesfl import worker as worker_app
from edgeloom.apps.mergesfl.messages import (
    Backward,
    Forward,
    Join,
    Load,
    Stop,
    Timing,
    TrainLocal,
    Upload,
)
from edgeloom.apps.mergesfl.setup import build_models, build_problem, learning_rate
from edgeloom.apps.mergesfl.strategies import STRATEGIES, ServerJob
from edgeloom.apps.mergesfl.strategies.common import check_join
from edgeloom.apps.mergesfl.strategies.mergesfl import MergeSFL
from edgeloom.runtime.bus import Bus, Message, RemoteError
from edgeloom.runtime.federation import (
    RETIRED_SESSIONS,
    Freshness,
    Participants,
    Refused,
    Reply,
    RoundOutcome,
    Stamped,
    run_round,
)
from edgeloom.runtime.metrics import MetricFactory
from edgeloom.runtime.role import RoleContext
from edgeloom_testkit.kinds import echoservice
from edgeloom_testkit.kinds.splittraining import SMALL_SPLIT_JOB

FUZZ = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # a failure shows its example; no slow shrinking
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""Deterministic and bounded, so the fuzzer runs in seconds with the unit tests."""
TIMEOUT_S = 5.0


# --- an in-memory NATS that the real Bus runs on ----------------------------------------------


@dataclass
class _Msg:
    subject: str
    reply: str
    data: bytes
    headers: dict[str, str] | None


@dataclass
class _Subscription:
    subject: str
    queue: str
    cb: Callable[[_Msg], Awaitable[None]]
    inbox: asyncio.Queue[_Msg] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._deliver())

    async def _deliver(self) -> None:  # one message at a time per subscription, as nats-py
        while True:
            await self.cb(await self.inbox.get())

    async def unsubscribe(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


@dataclass
class LoopbackNats:
    """Routes every client's messages to the matching subscriptions of all clients, in order;
    answers a request nobody hears with the server's 503, as nats-server does."""

    subscriptions: list[_Subscription] = field(default_factory=list)

    def client(self) -> _Client:
        return _Client(self)

    def route(self, msg: _Msg) -> None:
        targets = [s for s in self.subscriptions if _matches(s.subject, msg.subject)]
        groups: dict[str, _Subscription] = {}
        for sub in targets:
            if not sub.queue or sub.queue not in groups:
                groups[sub.queue or str(id(sub))] = sub
        for sub in groups.values():
            sub.inbox.put_nowait(msg)
        if not groups and msg.reply:
            self.route(_Msg(msg.reply, "", b"", {"Status": "503"}))

    def close(self) -> None:
        for sub in self.subscriptions:
            if sub.task is not None:
                sub.task.cancel()


@dataclass
class _Client:
    """What Bus uses of a nats-py client."""

    server: LoopbackNats
    max_payload: int = 1024 * 1024
    is_closed: bool = False
    subscriptions: list[_Subscription] = field(default_factory=list)

    def new_inbox(self) -> str:
        return f"_INBOX.{uuid.uuid4().hex}"

    async def publish(
        self, subject: str, payload: Any, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        self.server.route(_Msg(subject, reply, bytes(payload), headers))

    async def subscribe(self, subject: str, queue: str = "", cb: Any = None, **_: Any) -> Any:
        sub = _Subscription(subject, queue, cb)
        self.server.subscriptions.append(sub)
        self.subscriptions.append(sub)
        sub.start()
        return sub

    async def flush(self) -> None:
        await asyncio.sleep(0)

    async def drain(self) -> None:
        """Gone, as a killed process's connection is."""
        self.is_closed = True
        for sub in self.subscriptions:
            self.server.subscriptions.remove(sub)
            await sub.unsubscribe()


@contextlib.asynccontextmanager
async def loopback(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[str], Any]]:
    """``connect(name)`` gives a real Bus on one shared in-memory NATS."""
    server = LoopbackNats()

    async def fake_connect(**_: Any) -> _Client:
        return server.client()

    monkeypatch.setattr(nats, "connect", fake_connect)

    async def connect(name: str) -> Bus:
        return await Bus.connect("nats://loopback", name, connect_deadline_s=TIMEOUT_S)

    try:
        yield connect
    finally:
        server.close()


# --- the SplitTrainingJob world ---------------------------------------------------------------


def _job(method: str = "mergesfl") -> Resource[SplitTrainingJobSpec]:
    """The small digits job (three workers), two iterations a round."""
    obj = {**SMALL_SPLIT_JOB, "metadata": {"name": "fuzz", "uid": "u"}}
    training = {**obj["spec"]["training"], "iterationsPerRound": 2}
    obj["spec"] = {**obj["spec"], "method": method, "training": training}
    return parse_resource(obj, SPLIT.spec_model, SPLIT.kind)


JOB = _job()
SPEC = JOB.spec
PROBLEM = build_problem(SPEC)  # every role derives the same; built once for the whole module


@pytest.fixture(autouse=True)
def _one_problem(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every role shares the module's problem, on one torch thread (as the runner's roles run:
    a tiny model on several threads of a busy machine is ten times slower)."""
    monkeypatch.setattr(worker_app, "build_problem", lambda spec: PROBLEM)
    monkeypatch.setattr(server_app, "build_problem", lambda spec: PROBLEM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _context(bus: Bus, role: str, index: int, job: Resource[Any], info: Any = SPLIT) -> Any:
    return RoleContext(info, job, role, index, bus, MetricFactory(), asyncio.Event())


@dataclass
class World:
    """A server's participants and job, and the workers that joined it."""

    connect: Callable[[str], Awaitable[Bus]]
    job: ServerJob
    workers: dict[int, worker_app.Worker]
    tasks: list[asyncio.Task[None]]

    @property
    def participants(self) -> Participants[Join]:
        return self.job.participants

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


Tamper = Callable[[str, Timing, dict[str, torch.Tensor] | None], tuple[Any, Any]]
"""(op, timing, reply tensors) -> the (envelope, tensors) a tampering worker sends instead."""


class TamperingWorker(worker_app.Worker):
    """A real worker whose replies ``tamper`` rewrites."""

    def __init__(self, ctx: RoleContext[SplitTrainingJobSpec], tamper: Tamper) -> None:
        super().__init__(ctx)
        self.tamper = tamper

    async def answer(self, msg: Message) -> Any:
        cmd, timing, reply = await super().answer(msg)
        return (cmd, *self.tamper(cmd.op, timing, reply))


async def _world(
    connect: Callable[[str], Awaitable[Bus]],
    job: Resource[SplitTrainingJobSpec],
    workers: list[int],
    tamper: dict[int, Tamper] | None = None,
) -> World:
    """A server's participants and job, and ``workers`` (rewritten by ``tamper``) joined."""
    spec = job.spec
    ctx = _context(await connect("server"), "server", 0, job)
    participants = Participants(
        ctx,
        Join,
        total=spec.worker_count,
        min_participants=1,
        deadline_s=TIMEOUT_S,
        check_join=lambda hello: check_join(hello, PROBLEM.num_classes),
    )
    await participants.listen()
    bottom, top = build_models(spec, PROBLEM)
    server_job = ServerJob(spec, PROBLEM, bottom, top, np.random.default_rng(0), participants)
    world = World(connect, server_job, {}, [])
    for i in workers:
        wctx = _context(await connect(f"worker-{i}"), "worker", i, job)
        rewrite = (tamper or {}).get(i)
        w = worker_app.Worker(wctx) if rewrite is None else TamperingWorker(wctx, rewrite)
        world.workers[i] = w
        world.tasks.append(asyncio.create_task(w.serve()))
    while set(participants.joined) != set(workers):
        await asyncio.sleep(0.001)
    return world


def _finite(*modules: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.state_dict().values())


# --- the server: joins -------------------------------------------------------------------------


def _honest_join(index: int) -> Join:
    counts = PROBLEM.label_counts(index).tolist()
    return Join(index=index, samples=sum(counts), label_counts=counts, profile={})


consistent_joins = st.builds(
    lambda index, counts: {"index": index, "samples": sum(counts), "label_counts": counts},
    st.integers(0, 4),
    st.lists(st.integers(0, 50), min_size=0, max_size=12),
)
any_joins = st.fixed_dictionaries(
    {
        "index": st.integers(0, 4),
        "samples": st.integers(0, 2**53),
        "label_counts": st.lists(st.integers(0, 2**53), max_size=12),
    }
)


@FUZZ
@given(join=st.one_of(consistent_joins, any_joins, st.just(_honest_join(1).model_dump())))
def test_server_refuses_joins_it_cannot_plan_with_and_plans_on(
    monkeypatch: pytest.MonkeyPatch, join: dict[str, Any]
) -> None:
    """A join the selection cannot use (all-zero label counts among them) is refused and
    changes nothing; the next MergeSFL plan, from label counts, still works."""

    async def scenario() -> None:
        async with loopback(monkeypatch) as connect:
            world = await _world(connect, JOB, [])
            parts = world.participants
            for i in range(3):
                parts.joined[i] = _honest_join(i)
                world.job.estimates[i] = (1e-3 * (i + 1), 1e-4)  # plans from label counts
            before = dict(parts.joined)
            attacker = await connect("attacker")
            forged = {**join, "profile": {}}
            reply = await attacker.request(
                parts.ctx.subject("join"), json.dumps(forged), timeout=TIMEOUT_S
            )
            ack = reply.parse(JoinAck)
            valid = (
                join["index"] < 3
                and len(join["label_counts"]) == PROBLEM.num_classes
                and 0 < join["samples"] == sum(join["label_counts"])
            )
            assert ack.accepted == valid, ack.reason
            if not valid:
                assert parts.joined == before
            plan = await MergeSFL(world.job).configure(1)
            assert set(plan.chosen) == {0, 1, 2}
            assert sum(plan.batches.values()) == SPEC.training.total_batch_size
            await world.close()

    asyncio.run(scenario())


# --- the server: replies -----------------------------------------------------------------------

Tensors = dict[str, torch.Tensor]
Rewrite = Callable[[Timing, Tensors], tuple[Any, Tensors]]
"""(timing, tensors) of a reply -> the (envelope, tensors) sent instead."""
FEATURES = (32, 4, 4)
"""The digits CNN's bottom features, per sample."""


def reshaped(*trailing: int) -> Rewrite:
    """Features of another trailing shape (the issue's crash)."""
    return lambda t, r: (t, {**r, "features": torch.zeros(len(r["labels"]), *trailing)})


def replaced(key: str, value: Callable[[Tensors], torch.Tensor | None]) -> Rewrite:
    """Tensor ``key`` replaced by ``value(tensors)``, or left out when that is None."""

    def rewrite(t: Timing, r: Tensors) -> tuple[Any, Tensors]:
        out = {**r, key: value(r)}
        return t, {k: v for k, v in out.items() if v is not None}

    return rewrite


def poisoned(value: float) -> Rewrite:
    def rewrite(t: Timing, r: Tensors) -> tuple[Any, Tensors]:
        feats = r["features"].clone()
        feats.view(-1)[0] = value
        return t, {**r, "features": feats}

    return rewrite


def miscounted(extra: int) -> Rewrite:
    """A timing that counts other samples than were sent (or trained on)."""
    return lambda t, r: (t.model_copy(update={"samples": t.samples + extra}), r)


def edited(how: str, pick: int) -> Rewrite:
    """Weights with one tensor dropped, added, reshaped, widened or poisoned."""

    def rewrite(t: Timing, r: Tensors) -> tuple[Any, Tensors]:
        return t, _edit_state(r, how, pick)

    return rewrite


def garbage(envelope: str) -> Rewrite:
    return lambda t, r: (envelope, r)


def _edit_state(state: Tensors, how: str, pick: int) -> Tensors:
    out = dict(state)
    name = sorted(out)[pick % len(out)]
    if how == "drop":
        del out[name]
    elif how == "extra":
        out["extra.weight"] = torch.zeros(3)
    elif how == "shape":
        out[name] = torch.zeros(out[name].numel() + 1)
    elif how == "dtype":
        out[name] = out[name].double()
    else:
        out[name] = torch.full_like(out[name], math.nan)
    return out


STATE_EDITS = st.sampled_from(["drop", "extra", "shape", "dtype", "nan"])
forward_rewrites = st.one_of(
    st.lists(st.integers(1, 5), max_size=3)
    .filter(lambda s: tuple(s) != FEATURES)
    .map(lambda s: reshaped(*s)),
    st.sampled_from(
        [
            replaced("features", lambda r: None),
            replaced("labels", lambda r: None),
            replaced("features", lambda r: r["features"].double()),
            replaced("features", lambda r: r["features"][:-1]),
            replaced("features", lambda r: torch.zeros(0, *FEATURES)),
            replaced("labels", lambda r: r["labels"].int()),
            replaced("labels", lambda r: r["labels"][:, None]),
            replaced("labels", lambda r: torch.full_like(r["labels"], PROBLEM.num_classes)),
            replaced("labels", lambda r: torch.full_like(r["labels"], -1)),
        ]
    ),
    st.sampled_from([math.nan, math.inf, -math.inf]).map(poisoned),
    st.integers(1, 10**6).map(miscounted),
)
upload_rewrites = st.one_of(
    st.builds(edited, STATE_EDITS, st.integers(0, 100)), st.integers(1, 10**6).map(miscounted)
)
timing_rewrites = st.sampled_from(
    ['{"compute_s": NaN}', '{"upload_s": Infinity}', '{"compute_s": -1}', '{"x": 1}', "[]", "{"]
).map(garbage)


def _rewrites(method: str) -> st.SearchStrategy[tuple[str, str, Rewrite]]:
    """(method, op, rewrite): a wrong reply to one of the commands the method's rounds send."""
    split = method != "fedavg"
    ops = ["load", "forward", "backward", "upload"] if split else ["load", "train_local", "upload"]
    wrong = [
        st.tuples(st.just(method), st.sampled_from(ops), timing_rewrites),
        st.tuples(st.just(method), st.just("upload"), upload_rewrites),
    ]
    if split:
        wrong.append(st.tuples(st.just(method), st.just("forward"), forward_rewrites))
    return st.one_of(*wrong)


def _once(op: str, rewrite: Rewrite) -> Tamper:
    """Rewrite the first reply to ``op``, pass the rest."""
    fired: list[bool] = []

    def tamper(got: str, timing: Timing, reply: Tensors | None) -> tuple[Any, Any]:
        if got != op or fired:
            return timing, reply
        fired.append(True)
        return rewrite(timing, reply or {})

    return tamper


wrong_replies = st.sampled_from([m.value for m in SplitMethod]).flatmap(_rewrites)


@settings(FUZZ, max_examples=30)
@given(case=wrong_replies)
@example(case=("mergesfl", "forward", reshaped(3)))  # the three attacks, every time
@example(case=("sfl", "forward", reshaped(32, 4)))
@example(case=("splitfed", "upload", edited("shape", 0)))
@example(case=("fedavg", "upload", miscounted(10**6)))
def test_server_drops_a_worker_whose_reply_is_wrong_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, str, Rewrite],
) -> None:
    """Worker 2's reply is wrong once: it is dropped from that round with a warning that names
    it, the others finish the round, the model stays finite, and it is back the next round."""
    method, op, rewrite = case
    job = _job(method)

    async def scenario() -> tuple[RoundOutcome, RoundOutcome, ServerJob]:
        async with loopback(monkeypatch) as connect:
            world = await _world(connect, job, [0, 1, 2], {2: _once(op, rewrite)})
            strategy = STRATEGIES[job.spec.method](world.job)
            first = await run_round(strategy, 0)
            second = await run_round(strategy, 1)
            await world.close()
            return first, second, world.job

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        first, second, server_job = asyncio.run(scenario())
    assert first.dropped == [2] and sorted(first.participants) == [0, 1]
    assert any("worker 2 dropped from this round" in r.getMessage() for r in caplog.records)
    assert _finite(server_job.bottom, server_job.top)
    assert sorted(second.participants) == [0, 1, 2] and second.dropped == []


# --- the worker: commands ----------------------------------------------------------------------

BATCH = 8
FRESH_SEQ = 2**40
"""A request id above any the server has used: fresh, so only the content can be wrong."""


@dataclass
class Scene:
    """What an attacker of worker 0 knows in the middle of round 1."""

    seen: list[Message]
    """Every command the worker got so far (round 0's from an earlier server session)."""
    session: str
    last_seq: int
    """The request id of the last command the worker accepted."""
    bottom: Tensors
    features: torch.Tensor | None
    """The features of the pending forward (at position 1), else None."""


@dataclass
class Attack:
    """One wrong message and where in round 1 it comes: after the Load (0) or the Forward (1)."""

    name: str
    at: int
    build: Callable[[Scene], tuple[str, Tensors | None]]
    with_reply: bool = True


def _stamped(command: Stamped, session: str, seq: int) -> str:
    return command.model_copy(update={"session": session, "seq": seq}).model_dump_json()


def _fresh(command: Stamped, tensors: Callable[[Scene], Tensors | None] = lambda s: None) -> Any:
    return lambda s: (_stamped(command, s.session, FRESH_SEQ), tensors(s))


def _load(**changes: Any) -> Load:
    fields = {"round": 2, "batch_size": BATCH, "learning_rate": learning_rate(SPEC, 2)}
    return Load(**{**fields, **changes})


def _mutated_state(how: str, pick: int) -> Callable[[Scene], Tensors]:
    return lambda scene: _edit_state(scene.bottom, how, pick)


def _grad(how: str) -> Callable[[Scene], Tensors]:
    def build(scene: Scene) -> Tensors:
        assert scene.features is not None
        f = scene.features
        grads = {
            "missing": {},
            "shape": {"grad": torch.zeros(len(f) + 1, *f.shape[1:])},
            "trailing": {"grad": torch.zeros(len(f), 3)},
            "dtype": {"grad": torch.zeros_like(f, dtype=torch.float64)},
            "nan": {"grad": torch.full_like(f, math.nan)},
        }
        return grads[how]

    return build


def _replay(k: int) -> Callable[[Scene], tuple[str, Tensors]]:
    def build(scene: Scene) -> tuple[str, Tensors]:
        msg = scene.seen[k % len(scene.seen)]
        return msg.envelope_json, msg.tensors

    return build


def _stale(command: Stamped, back: int) -> Callable[[Scene], tuple[str, None]]:
    return lambda s: (_stamped(command, s.session, max(s.last_seq - back, 0)), None)


positions = st.integers(0, 1)
valid_next = st.sampled_from(
    [Stop(), Upload(round=1), Forward(round=1, iteration=1), _load(round=2)]
)
rounds = SPEC.training.rounds
worker_attacks = st.one_of(
    st.builds(lambda k, at: Attack("replay", at, _replay(k)), st.integers(0, 50), positions),
    st.builds(
        lambda cmd, back, at: Attack("stale", at, _stale(cmd, back)),
        valid_next,
        st.integers(0, 20),
        positions,
    ),
    st.builds(
        lambda cmd, at: Attack("unstamped", at, lambda s: (cmd.model_dump_json(), None)),
        valid_next,
        positions,
    ),
    st.builds(
        lambda cmd, at: Attack("no reply", at, _fresh(cmd), with_reply=False),
        st.sampled_from([Stop(), Upload(round=1), _load(round=2)]),
        positions,
    ),
    st.builds(
        lambda load, at: Attack("wrong load", at, _fresh(load, lambda s: s.bottom)),
        st.one_of(
            st.integers(rounds, rounds + 5).map(lambda r: _load(round=r)),
            st.integers(0, 1).map(lambda r: _load(round=r)),  # not after the loaded round
            st.integers(1, SPEC.training.min_batch_size - 1).map(lambda b: _load(batch_size=b)),
            st.integers(SPEC.training.max_batch_size + 1, 10**6).map(lambda b: _load(batch_size=b)),
            st.floats(SPEC.training.learning_rate * 1.01, 1e6).map(
                lambda lr: _load(learning_rate=lr)
            ),
            st.just(_load(whole_model=True)),
        ),
        positions,
    ),
    st.builds(
        lambda how, pick, at: Attack(
            "wrong weights", at, _fresh(_load(), _mutated_state(how, pick))
        ),
        STATE_EDITS,
        st.integers(0, 100),
        positions,
    ),
    st.builds(
        lambda cmd, at: Attack("wrong round", at, _fresh(cmd)),
        st.one_of(
            st.sampled_from([0, 2, 3, 10**9]).map(lambda r: Forward(round=r, iteration=0)),
            st.integers(2, 10**9).map(lambda it: Forward(round=1, iteration=it)),
            st.sampled_from([0, 2, 3]).map(lambda r: Upload(round=r)),
            st.integers(1, 2).map(lambda n: TrainLocal(round=1, iterations=n)),
        ),
        positions,
    ),
    st.builds(
        lambda how: Attack("wrong grad", 1, _fresh(Backward(round=1, iteration=0), _grad(how))),
        st.sampled_from(["missing", "shape", "trailing", "dtype", "nan"]),
    ),
    st.builds(
        lambda it: Attack("backward out of turn", 1, _fresh(Backward(round=1, iteration=it))),
        st.integers(1, 5),
    ),
    st.just(
        Attack("backward before forward", 0, _fresh(Backward(round=1, iteration=0), lambda s: {}))
    ),
    st.builds(
        lambda envelope, at: Attack("garbage", at, lambda s: (envelope, None)),
        st.sampled_from(
            [
                "{",
                "[]",
                '{"op": "nope"}',
                '{"op": "load", "round": 2, "batch_size": 8, "learning_rate": NaN}',
                '{"op": "forward", "round": -1, "iteration": 0}',
                '{"op": "upload", "round": 1, "session": "s", "seq": 1, "extra": 1}',
            ]
        ),
        positions,
    ),
)


async def _worker_round(
    world: World, r: int, attack: Callable[[int], Awaitable[None]] | None = None
) -> tuple[Tensors, Reply[Timing]]:
    """Round ``r`` on worker 0 as the server runs it; ``attack(position)`` strikes in between."""
    parts = world.participants
    load = Load(round=r, batch_size=BATCH, learning_rate=learning_rate(SPEC, r))
    await parts.call(0, load, Timing, world.job.bottom.state_dict())
    if attack is not None:
        await attack(0)
    fwd = await parts.call(0, Forward(round=r, iteration=0), Timing)
    if attack is not None:
        await attack(1)
    grad = torch.full_like(fwd.message.tensors["features"], 0.01)
    await parts.call(0, Backward(round=r, iteration=0), Timing, {"grad": grad})
    up = await parts.call(0, Upload(round=r), Timing)
    return up.message.tensors, fwd


async def _attacked_run(
    connect: Callable[[str], Awaitable[Bus]], attack: Attack | None
) -> tuple[Tensors, Reply[Timing], list[str]]:
    """Round 0, a server restart, round 1 with ``attack``: the upload, the forward, and how
    the worker answered the attack."""
    world = await _world(connect, JOB, [0])
    sniffer = await connect("sniffer")
    seen: list[Message] = []

    async def record(msg: Message) -> None:
        seen.append(msg)

    await sniffer.subscribe(world.participants.subject(0), record)
    await _worker_round(world, 0)
    world.participants.session = "restarted"  # round 0's session is an earlier one now
    answers: list[str] = []

    async def strike(position: int) -> None:
        if attack is None or attack.at != position:
            return
        worker = world.workers[0]
        scene = Scene(
            list(seen),
            "restarted",
            worker.freshness.last_seq,
            world.job.bottom.state_dict(),
            worker.features.detach() if worker.features is not None else None,
        )
        envelope, tensors = attack.build(scene)
        subject = world.participants.subject(0)
        if not attack.with_reply:
            await sniffer.publish(subject, envelope, tensors)
            return
        try:
            await sniffer.request(subject, envelope, tensors, timeout=TIMEOUT_S)
            answers.append("accepted")
        except RemoteError as err:
            answers.append(str(err))

    upload, fwd = await _worker_round(world, 1, strike)
    await world.close()
    return upload, fwd, answers


_REFERENCE: list[Tensors] = []


def _reference_upload(monkeypatch: pytest.MonkeyPatch) -> Tensors:
    """Worker 0's round-1 upload when nobody attacks it (computed once)."""
    if not _REFERENCE:

        async def clean() -> Tensors:
            async with loopback(monkeypatch) as connect:
                return (await _attacked_run(connect, None))[0]

        _REFERENCE.append(asyncio.run(clean()))
    return _REFERENCE[0]


@settings(FUZZ, max_examples=50)
@given(attack=worker_attacks)
def test_worker_refuses_wrong_commands_and_stays_in_its_round(
    monkeypatch: pytest.MonkeyPatch, attack: Attack
) -> None:
    """A replayed, stale, unstamped or wrong command in the middle of a round is refused with an
    error reply (or ignored, without a reply subject) and changes nothing: the round goes on
    and the worker uploads exactly the weights it uploads when nobody attacks it."""
    reference = _reference_upload(monkeypatch)

    async def scenario() -> tuple[Tensors, Reply[Timing], list[str]]:
        async with loopback(monkeypatch) as connect:
            return await _attacked_run(connect, attack)

    upload, fwd, answers = asyncio.run(scenario())
    if attack.with_reply:
        (answer,) = answers
        assert "refused" in answer or "rejected" in answer, (attack.name, answer)
    assert fwd.message.tensors["features"].shape == (BATCH, *(32, 4, 4))
    assert upload.keys() == reference.keys()
    assert all(torch.equal(upload[k], reference[k]) for k in reference), attack.name


# --- the EchoService ---------------------------------------------------------------------------

ECHO = parse_resource(
    {
        "apiVersion": SMALL_SPLIT_JOB["apiVersion"],
        "kind": "EchoService",
        "metadata": {"name": "e"},
        "spec": {},
    },
    echoservice.EchoServiceSpec,
    echoservice.KIND.kind,
)
echo_messages = st.tuples(
    st.one_of(st.text(max_size=200), st.binary(max_size=64).map(lambda b: b.hex())),
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.lists(st.floats(allow_nan=True), max_size=4).map(
            lambda v: torch.tensor(v, dtype=torch.float32)
        ),
        max_size=3,
    ),
    st.sampled_from(["request", "publish", "raw", "no responders"]),
)


@FUZZ
@given(message=echo_messages)
def test_echo_survives_any_message_and_still_echoes(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    message: tuple[str, Tensors, str],
) -> None:
    """Any envelope, tensors, a message without a reply subject, bytes that are no message at
    all, a forged no-responders status: the echo role answers what it can, fails on none (no
    error logged), and the next request still gets its own envelope back."""
    envelope, tensors, how = message

    async def scenario() -> str:
        async with loopback(monkeypatch) as connect:
            ctx = _context(await connect("echo"), "echo", 0, ECHO, echoservice.KIND)
            role = asyncio.create_task(echoservice.echo(ctx))
            client = await connect("client")
            subject = ctx.subject("echo")
            while not any(s.subject == subject for s in client.nc.server.subscriptions):
                await asyncio.sleep(0.001)
            if how == "request":
                reply = await client.request(subject, envelope, tensors, timeout=TIMEOUT_S)
                assert reply.envelope_json == envelope
            elif how == "publish":
                await client.publish(subject, envelope, tensors)
            elif how == "raw":
                await client.nc.publish(subject, envelope.encode(), reply="_INBOX.x")
            else:
                await client.nc.publish(subject, b"", headers={"Status": "503"})
            answer = await client.request(subject, '{"ping": 1}', timeout=TIMEOUT_S)
            role.cancel()
            return answer.envelope_json

    caplog.clear()
    assert asyncio.run(scenario()) == '{"ping": 1}'
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- freshness and rejoining -------------------------------------------------------------------


def test_freshness_refuses_replays_and_earlier_sessions() -> None:
    fresh = Freshness()
    with pytest.raises(Refused, match="no coordinator session"):
        fresh.check(Stop())
    fresh.accept(Stop(session="a", seq=5))
    with pytest.raises(Refused, match="stale request 5"):
        fresh.check(Stop(session="a", seq=5))  # a replay
    fresh.accept(Stop(session="a", seq=9))  # ids may skip (the other workers' requests)
    fresh.accept(Stop(session="b", seq=1))  # a restarted coordinator starts over
    with pytest.raises(Refused, match="earlier coordinator session a"):
        fresh.check(Stop(session="a", seq=100))
    for n in range(RETIRED_SESSIONS + 1):
        fresh.accept(Stop(session=f"s{n}", seq=1))
    assert len(fresh.retired) == RETIRED_SESSIONS and "a" not in fresh.retired


async def test_participants_stamp_each_request_with_their_session_and_a_new_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with loopback(monkeypatch) as connect:
        world = await _world(connect, JOB, [])
        parts = world.participants
        first, second = parts.stamp(Upload(round=0)), parts.stamp(Upload(round=0))
        assert first.session == second.session == parts.session != ""
        assert 0 < first.seq < second.seq
        assert parts.stamp(JoinAck(accepted=True)) == JoinAck(accepted=True)  # not a command


async def test_a_restarted_coordinator_calls_the_workers_that_outlived_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers joined the first server; its replacement knows nobody, calls them, and they
    join again, with the data they joined with."""
    async with loopback(monkeypatch) as connect:
        first = await _world(connect, JOB, [0, 1, 2])
        await first.participants.ctx.bus.drain()  # the server's pod is gone
        second = await _world(connect, JOB, [])
        assert second.participants.joined == {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        await second.participants.wait_for_all(timeout_s=10)
        assert loop.time() - started < 10
        assert second.participants.joined == first.participants.joined
        await first.close()
