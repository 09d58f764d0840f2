"""The federation coordinator and the job reporter over a real nats-server."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from pydantic import BaseModel

from edgeloom.api.kinds.splittraining import KIND as SPLIT
from edgeloom.api.kinds.splittraining import SplitTrainingJobStatus
from edgeloom.api.messages import DropWorkers, JobResult, JoinAck, JoinRequest, WorkersDropped
from edgeloom.api.resource import parse_resource
from edgeloom.api.status import Phase, get_condition
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus, Message
from edgeloom.runtime.federation import Participants, RunStore
from edgeloom.runtime.metrics import MetricFactory
from edgeloom.runtime.reporter import JobFailed, JobReporter, Outcome
from edgeloom.runtime.role import RoleContext
from edgeloom_testkit.kinds.splittraining import SMALL_SPLIT_JOB

pytestmark = pytest.mark.integration


class Ping(BaseModel):
    n: int


class State(BaseModel):
    round: int
    note: str


async def _context(url: str, name: str = "fed") -> RoleContext:
    obj = {**SMALL_SPLIT_JOB, "metadata": {"name": name, "uid": "run-1"}}
    resource = parse_resource(obj, SPLIT.spec_model, SPLIT.kind)
    bus = await Bus.connect(url, f"{name}-server")
    return RoleContext(SPLIT, resource, "server", 0, bus, MetricFactory(), asyncio.Event())


async def _worker(url: str, ctx: RoleContext, index: int, answer: bool = True) -> Bus:
    """A participant that joins and answers Ping with n + index (or never answers)."""
    bus = await Bus.connect(url, f"worker-{index}")

    async def on_ping(msg: Message) -> None:
        if answer:
            await bus.respond(msg, Ping(n=msg.parse(Ping).n + index))

    await bus.subscribe(ctx.subject("worker", str(index)), on_ping)
    return bus


async def _join(bus: Bus, ctx: RoleContext, index: int) -> JoinAck:
    reply = await bus.request(ctx.subject("join"), JoinRequest(index=index), timeout=5)
    return reply.parse(JoinAck)


async def test_participants_join_answer_get_dropped_and_excluded(nats_server: NatsServer) -> None:
    ctx = await _context(nats_server.url)
    parts = Participants(ctx, JoinRequest, total=3, min_participants=2, deadline_s=1.0)
    await parts.listen()
    workers = [await _worker(nats_server.url, ctx, i, answer=i != 2) for i in range(3)]
    assert (await _join(workers[0], ctx, 5)).accepted is False  # index out of range
    for i, w in enumerate(workers):
        assert (await _join(w, ctx, i)).accepted
    await parts.wait_for_all(timeout_s=1)
    replies, lost = await parts.call_many([0, 1, 2], lambda i: Ping(n=10), Ping)
    assert {i: r.value.n for i, r in replies.items()} == {0: 10, 1: 11}
    assert lost == [2]  # missed its deadline: out of this round, not of the job
    assert parts.require([0, 1]) == [0, 1]
    with pytest.raises(JobFailed, match="minWorkers is 2"):
        parts.require([0])

    operator = await Bus.connect(nats_server.url, "operator")
    reply = await operator.request(ctx.subject("control"), DropWorkers(workers=[2]), timeout=5)
    assert reply.parse(WorkersDropped).dropped == [2]
    assert sorted(parts.joined) == [0, 1]
    rejoin = await _join(workers[2], ctx, 2)
    assert not rejoin.accepted and rejoin.retire  # excluded for good: told to retire
    with pytest.raises(Exception, match="not in this job"):
        await operator.request(ctx.subject("control"), DropWorkers(workers=[9]), timeout=5)
    for bus in (*workers, operator, ctx.bus):
        await bus.drain()


async def test_too_few_joins_in_time_fail_the_job(nats_server: NatsServer) -> None:
    ctx = await _context(nats_server.url)
    parts = Participants(ctx, JoinRequest, total=3, min_participants=2, deadline_s=1.0)
    await parts.listen()
    worker = await _worker(nats_server.url, ctx, 0)
    await _join(worker, ctx, 0)
    with pytest.raises(JobFailed, match="only 1 of 3 workers joined"):
        await parts.wait_for_all(timeout_s=0.5)
    await worker.drain()
    await ctx.bus.drain()


async def test_run_store_round_trips_named_tensor_groups(nats_server: NatsServer) -> None:
    ctx = await _context(nats_server.url)
    store = RunStore.of(ctx, State)
    assert await store.load() is None
    # the same tensor names in two groups must not collide
    groups = {"bottom": {"0.weight": torch.ones(2, 3)}, "top": {"0.weight": torch.zeros(4)}}
    ref = await store.save(3, groups, State(round=3, note="x"))
    assert ref.endswith("@3")
    state, loaded = await store.load()  # type: ignore[misc]
    assert state == State(round=3, note="x")
    assert set(loaded) == {"bottom", "top"}
    assert torch.equal(loaded["bottom"]["0.weight"], torch.ones(2, 3))
    assert torch.equal(loaded["top"]["0.weight"], torch.zeros(4))
    other = await _context(nats_server.url, name="other")  # another run has no checkpoint
    assert await RunStore.of(other, State).load() is None
    await ctx.bus.drain()
    await other.bus.drain()


async def _listen(ctx: RoleContext) -> tuple[list[dict], list[JobResult], Bus]:
    statuses: list[dict] = []
    results: list[JobResult] = []
    bus = await Bus.connect(ctx.bus.nc.connected_url.geturl(), "watcher")

    async def on_status(msg: Message) -> None:
        statuses.append(json.loads(msg.envelope_json))

    async def on_result(msg: Message) -> None:
        results.append(msg.parse(JobResult))

    await bus.subscribe(ctx.subject("status"), on_status)
    await bus.subscribe(ctx.subject("result"), on_result)
    return statuses, results, bus


def _conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def _metric(ctx: RoleContext, name: str) -> float | None:
    return ctx.metrics.registry.get_sample_value(name, {})


async def test_reporter_sets_kstatus_conditions_and_the_steps_pair(
    nats_server: NatsServer,
) -> None:
    ctx = await _context(nats_server.url)
    statuses, results, watcher = await _listen(ctx)
    reporter = JobReporter(ctx, SplitTrainingJobStatus(), "accuracy", planned=5)
    assert _metric(ctx, "edgeloom_steps_planned") == 5

    async def work() -> Outcome:
        await reporter.progress("RoundCompleted", "round 1", steps=1, planned=5, round=1)
        return Outcome("done", {"rounds": 1}, [{"round": 1, "accuracy": 0.5}])

    await reporter.run(work)
    await watcher.nc.flush()
    await asyncio.sleep(0.2)
    running, final = statuses
    assert running["phase"] == Phase.RUNNING
    assert _conditions(running) == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    assert final["phase"] == Phase.SUCCEEDED
    assert _conditions(final) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    (result,) = results
    assert result.succeeded and result.history == [{"round": 1, "accuracy": 0.5}]
    assert result.status["phase"] == Phase.SUCCEEDED
    assert _metric(ctx, "edgeloom_steps_completed") == 1
    assert _metric(ctx, "edgeloom_steps_planned") == 1  # finished early: nothing left to do
    await watcher.drain()
    await ctx.bus.drain()


async def test_reporter_turns_a_failure_into_failed_stalled_and_a_result(
    nats_server: NatsServer,
) -> None:
    ctx = await _context(nats_server.url)
    statuses, results, watcher = await _listen(ctx)
    reporter = JobReporter(ctx, SplitTrainingJobStatus(), "accuracy")

    async def work() -> Outcome:
        await reporter.progress("Loading", "loading", steps=0)
        raise JobFailed("only 1 workers left")

    with pytest.raises(JobFailed):
        await reporter.run(work, on_failure=lambda message: Outcome(message, {"rounds": 0}))
    await watcher.nc.flush()
    await asyncio.sleep(0.2)
    assert _metric(ctx, "edgeloom_steps_planned") == 1  # open-ended: one step ahead
    final = statuses[-1]
    assert final["phase"] == Phase.FAILED
    assert _conditions(final) == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}
    stalled = get_condition(reporter.status.conditions, "Stalled")
    assert stalled is not None and stalled.message == "only 1 workers left"
    (result,) = results
    assert not result.succeeded and result.summary == {"rounds": 0}
    await watcher.drain()
    await ctx.bus.drain()
