"""The operator's NATS link and JetStream cleanup against a real nats-server, on state written by
the bus."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
import torch
from pydantic import BaseModel

from edgeloom.api.jobstate import job_buckets
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus
from edgeloom.runtime.framing import frame_envelope
from edgeloom_operators import jetstream
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.handlers import Operator
from edgeloom_operators.jetstream import delete_job_state
from edgeloom_operators.plugin import index
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_testkit.controlplane import free_port

pytestmark = pytest.mark.integration


class Marker(BaseModel):
    run: str


async def test_deleting_a_job_removes_its_buckets_and_nothing_else(
    nats_server: NatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, "server")
    for job in ("job", "other"):
        buckets = job_buckets("ns", "SplitTrainingJob", job)
        for run in ("run-a", "run-b"):
            kv = await bus.key_value(buckets.state)
            await kv.put(run, Marker(run=run))
            await bus.put_object(buckets.checkpoints, run, "{}", {"w": torch.ones(3)})
    nc = await nats.connect(nats_server.url)
    gone = job_buckets("ns", "SplitTrainingJob", "job")
    assert await delete_job_state(nc, "ns", "SplitTrainingJob", "job") == list(gone.all)
    js = nc.jetstream()
    streams = {s.config.name for s in await js.streams_info()}
    assert not {f"KV_{gone.state}", f"OBJ_{gone.checkpoints}"} & streams
    kept = job_buckets("ns", "SplitTrainingJob", "other")
    assert await (await bus.key_value(kept.state)).get("run-b", Marker) == Marker(run="run-b")
    assert (await bus.get_object(kept.checkpoints, "run-a")).tensors["w"].sum() == 3
    assert await delete_job_state(nc, "ns", "SplitTrainingJob", "job") == []  # idempotent
    await nc.close()
    await bus.drain()


def test_every_job_has_buckets_of_its_own() -> None:
    a, b = job_buckets("ns", "SplitTrainingJob", "a"), job_buckets("ns", "SplitTrainingJob", "b")
    assert len({*a.all, *b.all}) == 4
    assert (
        job_buckets("ns", "PruneJob", "a") != a and job_buckets("ns2", "SplitTrainingJob", "a") != a
    )
    assert all(len(name) < 64 and "." not in name for name in a.all)


async def test_the_operator_connects_once_nats_appears_and_hears_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jetstream, "BACKOFF_START_S", 0.05)
    monkeypatch.setattr(jetstream, "BACKOFF_MAX_S", 0.2)
    events: list[str] = []

    class EventKube:
        def event(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
            events.append(reason)

    port = free_port()
    config = OperatorConfig(nats_url=f"nats://127.0.0.1:{port}", pod_name="op", pod_uid="u")
    operator = Operator(EventKube(), config, index([PruneJobPlugin()]))  # type: ignore[arg-type]
    connecting = asyncio.create_task(operator.connect_nats(None))
    while events != ["NatsUnreachable"]:
        await asyncio.sleep(0.05)
    with NatsServer(port=port) as server:  # NATS comes up where the operator looks
        await asyncio.wait_for(connecting, 30)
        assert events == ["NatsUnreachable", "NatsConnected"]
        assert operator.readiness.state == (True, f"connected to NATS at {server.url}")
        nc = await nats.connect(server.url)
        await nc.publish("edgeloom.ns.prunejob.p.status", frame_envelope('{"phase": "Running"}'))
        await nc.flush()
        while ("ns", "PruneJob", "p") not in operator.reports:  # the listener subscribed
            await asyncio.sleep(0.05)
        await nc.close()
        assert operator.link is not None
        await operator.link.close()
