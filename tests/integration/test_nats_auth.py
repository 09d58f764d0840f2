"""Per-job, per-role NATS identities against a real nats-server in operator mode.

Every attempt outside a role's permissions must be refused by the server itself: a publish or
subscription it does not allow comes back as a permissions violation, a JetStream API request
on another job's bucket gets no answer, a client without valid credentials cannot connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
import torch
from pydantic import BaseModel

from edgeloom.api.jobstate import job_buckets
from edgeloom.api.registry import kind_info
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus, NatsAccess
from edgeloom.runtime.natsauth import (
    ADMIN,
    Authority,
    creds_jwt,
    decode_claims,
    inbox_prefix,
    role_permissions,
)

pytestmark = pytest.mark.integration
KIND = kind_info("SplitTrainingJob")


class State(BaseModel):
    round: int


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.new()


@pytest.fixture(scope="module")
def server(authority: Authority) -> Iterator[NatsServer]:
    with NatsServer(authority=authority) as running:
        yield running


class Client:
    """A bus of one role of one job, recording the server's permission errors."""

    def __init__(self, bus: Bus, errors: list[str]) -> None:
        self.bus, self.errors = bus, errors

    async def violations(self) -> list[str]:
        await self.bus.nc.flush()
        await asyncio.sleep(0.2)  # -ERR arrives asynchronously
        return [e for e in self.errors if "permissions violation" in e.lower()]


async def connect(
    server: NatsServer, authority: Authority, tmp: Path, job: str, role: str, lifetime_s: float = 60
) -> Client:
    creds = tmp / f"{job}-{role}.creds"
    perms = role_permissions(KIND, "ns", job, role)
    creds.write_text(authority.issuer.creds(f"ns/{job}/{role}", perms, lifetime_s))
    bus = await Bus.connect(
        NatsAccess(server.url, creds),
        f"{job}-{role}",
        inbox_prefix=inbox_prefix("ns", KIND.kind, job, role),
        connect_deadline_s=5,
    )
    errors: list[str] = []

    async def record(err: Exception) -> None:
        errors.append(str(err))

    bus.nc._error_cb = record  # nats-py keeps the callback here; permission errors land in it
    return Client(bus, errors)


async def test_a_coordinator_owns_its_job_and_nothing_else(
    server: NatsServer, authority: Authority, tmp_path: Path
) -> None:
    a = await connect(server, authority, tmp_path, "job-a", "server")
    try:
        # its own status, result, commands to its workers: allowed
        for channel in ("status", "result", "worker.3"):
            await a.bus.publish(f"edgeloom.ns.splittrainingjob.job-a.{channel}", "{}")
        assert await a.violations() == []
        # job B's subjects: refused by the server
        await a.bus.publish("edgeloom.ns.splittrainingjob.job-b.status", "{}")
        await a.bus.publish("edgeloom.ns.splittrainingjob.job-b.worker.0", "{}")
        await a.bus.subscribe("edgeloom.ns.splittrainingjob.job-b.join", _ignore)
        assert len(await a.violations()) == 3

        # its own stores: allowed; job B's: no answer from the JetStream API
        own = job_buckets("ns", KIND.kind, "job-a")
        kv = await a.bus.key_value(own.state)
        await kv.put("run", State(round=3))
        assert await kv.get("run", State) == State(round=3)
        await a.bus.put_object(own.checkpoints, "run", "{}", {"w": torch.ones(3)})
        assert (await a.bus.get_object(own.checkpoints, "run")).tensors["w"].sum() == 3
        other = job_buckets("ns", KIND.kind, "job-b")
        for attempt in (a.bus.key_value(other.state), a.bus.get_object(other.checkpoints, "run")):
            with pytest.raises(nats.errors.TimeoutError):
                await attempt
    finally:
        await a.bus.drain()


async def test_a_worker_cannot_speak_for_its_coordinator(
    server: NatsServer, authority: Authority, tmp_path: Path
) -> None:
    worker = await connect(server, authority, tmp_path, "job-c", "worker")
    try:
        await worker.bus.publish("edgeloom.ns.splittrainingjob.job-c.join", "{}")
        assert await worker.violations() == []
        for channel in ("status", "result", "control", "worker.1"):
            await worker.bus.publish(f"edgeloom.ns.splittrainingjob.job-c.{channel}", "{}")
        await worker.bus.subscribe("edgeloom.ns.splittrainingjob.job-c.status", _ignore)
        await worker.bus.subscribe("_INBOX.>", _ignore)  # other roles' replies
        assert len(await worker.violations()) == 6
        with pytest.raises(nats.errors.TimeoutError):  # nor the coordinator's stores
            await worker.bus.key_value(job_buckets("ns", KIND.kind, "job-c").state)
    finally:
        await worker.bus.drain()


async def test_requests_and_replies_flow_within_a_job(
    server: NatsServer, authority: Authority, tmp_path: Path
) -> None:
    coordinator = await connect(server, authority, tmp_path, "job-d", "server")
    worker = await connect(server, authority, tmp_path, "job-d", "worker")
    try:

        async def answer(message):  # type: ignore[no-untyped-def]
            await coordinator.bus.respond(message, '{"ok": true}', {"t": torch.zeros(3)})

        await coordinator.bus.subscribe("edgeloom.ns.splittrainingjob.job-d.join", answer)
        reply = await worker.bus.request("edgeloom.ns.splittrainingjob.job-d.join", "{}")
        assert reply.envelope_json == '{"ok": true}' and reply.tensors["t"].shape == (3,)
        assert await coordinator.violations() == [] and await worker.violations() == []
    finally:
        await coordinator.bus.drain()
        await worker.bus.drain()


async def test_clients_without_valid_credentials_are_refused(
    server: NatsServer, authority: Authority, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)
    refused_s = time.monotonic() - started
    assert refused_s < 2  # refused by the server, not timed out

    foreign = Authority.new()  # a well-formed user of another operator
    creds = tmp_path / "foreign.creds"
    creds.write_text(foreign.issuer.creds("intruder", ADMIN))
    with pytest.raises(ConnectionError, match="Authorization Violation"):
        await Bus.connect(NatsAccess(server.url, creds), "intruder", connect_deadline_s=2)

    expired = tmp_path / "expired.creds"
    expired.write_text(authority.issuer.creds("late", ADMIN, lifetime_s=-5))
    assert decode_claims(creds_jwt(expired.read_text()))["exp"] < time.time()
    with pytest.raises(ConnectionError, match=r"(?i)expired|authorization"):
        await Bus.connect(NatsAccess(server.url, expired), "late", connect_deadline_s=2)


async def test_a_stop_interrupts_a_connect_that_cannot_succeed(tmp_path: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="stopped"):
        await Bus.connect("nats://127.0.0.1:9", "nobody", connect_deadline_s=60, stop=stop)
    assert time.monotonic() - started < 5


async def _ignore(message: object) -> None:
    pass
