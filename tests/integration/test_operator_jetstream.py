"""The operator's JetStream cleanup against a real nats-server, on state written by the bus."""

from __future__ import annotations

import nats
import pytest
import torch
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from edgeloom.api.jobstate import CHECKPOINT_BUCKET, STATE_BUCKET, checkpoint_name, state_key
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus
from edgeloom_operators.jetstream import delete_run_state

pytestmark = pytest.mark.integration


class Marker(BaseModel):
    run: str


async def test_deleting_a_run_removes_its_state_and_checkpoint_and_nothing_else(
    nats_server: NatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, "server")
    for uid in ("run-a", "run-b"):
        kv = await bus.key_value(STATE_BUCKET)
        await kv.put(state_key("ns", "job", uid), Marker(run=uid))
        await bus.put_object(
            CHECKPOINT_BUCKET, checkpoint_name("ns", "job", uid), "{}", {"w": torch.ones(3)}
        )
    nc = await nats.connect(nats_server.url)
    deleted = await delete_run_state(nc, "ns", "job", "run-a")
    assert deleted == [f"{STATE_BUCKET}/ns.job.run-a", f"{CHECKPOINT_BUCKET}/ns/job/run-a"]
    js = nc.jetstream()
    with pytest.raises(NotFoundError):
        await (await js.key_value(STATE_BUCKET)).get("ns.job.run-a")
    with pytest.raises(KeyError, match="run-a"):
        await bus.get_object(CHECKPOINT_BUCKET, "ns/job/run-a")
    assert (await kv.get("ns.job.run-b", Marker)) == Marker(run="run-b")
    assert (await bus.get_object(CHECKPOINT_BUCKET, "ns/job/run-b")).tensors["w"].sum() == 3
    assert await delete_run_state(nc, "ns", "job", "run-a") == []  # idempotent
    await nc.close()
    await bus.drain()


async def test_a_run_that_never_wrote_state_deletes_nothing(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    assert await delete_run_state(nc, "ns", "never", "uid") == []
    await nc.close()
