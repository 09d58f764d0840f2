"""The operator's JetStream cleanup against a real nats-server, on state written by the bus."""

from __future__ import annotations

import nats
import pytest
import torch
from pydantic import BaseModel

from edgeloom.api.jobstate import job_buckets
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus
from edgeloom_operators.jetstream import delete_job_state

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
