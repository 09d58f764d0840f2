"""HAT's device and cloud over a real nats-server: concurrent sessions decode as the full
model does, bad requests are refused without stopping the cloud, sessions are bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec
from edgeloom.algos.hat.speculative import Crossing, DeviceSession, GammaPolicy, Sampling, generate
from edgeloom.algos.hat.split import HatParts, HatSplit
from edgeloom.apps.hat.cloud import (
    BusCloud,
    CloudSessions,
    RemoteMiddle,
    ReplicaGone,
    SessionLimits,
    open_session,
    serve_cloud,
)
from edgeloom.apps.hat.messages import HIDDEN, TOKENS
from edgeloom.local.nats_server import NatsServer
from edgeloom.runtime.bus import Bus, RemoteError
from edgeloom_testkit.tiny_llms import greedy_tokens, tiny_llama, token_batch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SUBJECT = "default.hatinferenceservice.demo.middle"
REPLICA = "replica1"


@dataclass
class Setup:
    model: torch.nn.Module
    parts: HatParts
    sessions: CloudSessions
    bus: Bus


@pytest.fixture
async def cloud(nats_server: NatsServer) -> AsyncIterator[Setup]:
    model = tiny_llama(layers=5)
    parts = HatParts(model, HatSplit(1, 1))
    sessions = CloudSessions(parts, SessionLimits(max_sessions=3, max_positions=64))
    stop = asyncio.Event()
    server_bus = await Bus.connect(nats_server.url, "cloud")
    task = asyncio.create_task(
        serve_cloud(server_bus, SUBJECT, sessions, stop, replica=REPLICA, sweep_s=0.2)
    )
    device_bus = await Bus.connect(nats_server.url, "device")
    await asyncio.sleep(0.2)  # the subscription is live
    yield Setup(model, parts, sessions, device_bus)
    stop.set()
    await task
    await device_bus.drain()
    await server_bus.drain()


async def decode(setup: Setup, session: str, prompt: list[int], new_tokens: int) -> list[int]:
    adapter = Adapter(setup.parts, AdapterSpec("decoder")).eval()
    device = DeviceSession(setup.parts, adapter, Sampling())
    route = await open_session(setup.bus, SUBJECT, session)
    assert route == f"{SUBJECT}.{REPLICA}"
    remote = RemoteMiddle(setup.bus, route, session, asyncio.get_running_loop())
    result = await asyncio.to_thread(
        generate, device, remote, prompt, new_tokens, GammaPolicy(), chunk_size=4
    )
    assert remote.bytes_sent > 0 and remote.bytes_received == remote.bytes_sent
    freed = await remote.close()
    assert freed > 0
    return result.tokens


async def test_concurrent_devices_get_the_full_models_greedy_output(cloud: Setup) -> None:
    prompts = [token_batch(batch=1, length=9, seed=s)["input_ids"][0].tolist() for s in range(3)]
    outputs = await asyncio.gather(
        *(decode(cloud, f"device-{i}", p, 20) for i, p in enumerate(prompts))
    )
    for prompt, tokens in zip(prompts, outputs, strict=True):
        assert tokens == greedy_tokens(cloud.model, prompt, 20)
    assert cloud.sessions.sessions == {}  # every device closed its session


async def request(setup: Setup, session: str, start: int, hidden: torch.Tensor) -> None:
    """A middle request as raw JSON, so that a malformed one reaches the cloud too."""
    envelope = json.dumps({"op": "middle", "session": session, "start": start})
    await setup.bus.request(f"{SUBJECT}.{REPLICA}", envelope, {HIDDEN: hidden}, timeout=5)


@pytest.mark.parametrize(
    ("session", "start", "hidden", "reason"),
    [
        ("a", 0, torch.randn(1, 3, 32), r"\(1, n, 64\)"),
        ("a", 0, torch.randn(1, 3, 64).double(), "must be torch.float32"),
        ("a", 0, torch.full((1, 2, 64), float("nan")), "finite"),
        ("a", 5, torch.randn(1, 2, 64), "unknown"),
        ("a", 0, torch.randn(1, 65, 64), "over its bound of 64"),
        ("bad session!", 0, torch.randn(1, 2, 64), "session"),
    ],
    ids=["width", "dtype", "nan", "unknown-session", "over-bound", "bad-id"],
)
async def test_a_bad_request_is_refused_and_the_cloud_keeps_serving(
    cloud: Setup, session: str, start: int, hidden: torch.Tensor, reason: str
) -> None:
    with pytest.raises(RemoteError, match=reason):
        await request(cloud, session, start, hidden)
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()
    assert await decode(cloud, "after", prompt, 8) == greedy_tokens(cloud.model, prompt, 8)


async def test_the_session_count_is_bounded_and_idle_sessions_expire(cloud: Setup) -> None:
    for name in ("s1", "s2", "s3"):
        await request(cloud, name, 0, torch.randn(1, 2, 64))
    with pytest.raises(RemoteError, match="maximum of 3 sessions"):
        await request(cloud, "s4", 0, torch.randn(1, 2, 64))
    cloud.sessions.limits = SessionLimits(max_sessions=3, idle_timeout_s=0.1)
    await asyncio.sleep(0.6)  # the sweep runs every 0.2 s
    assert cloud.sessions.sessions == {}
    await request(cloud, "s4", 0, torch.randn(1, 2, 64))


async def test_a_lost_replica_fails_its_sequences_clearly_and_new_ones_go_elsewhere(
    cloud: Setup, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    second_bus = await Bus.connect(nats_server.url, "cloud-2")
    stop = asyncio.Event()
    second = CloudSessions(cloud.parts)
    task = asyncio.create_task(serve_cloud(second_bus, SUBJECT, second, stop, replica="replica2"))
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    routes: set[str] = set()
    for i in range(40):  # the queue group spreads new sequences over the replicas
        route = await open_session(cloud.bus, SUBJECT, f"s{i}")
        await RemoteMiddle(cloud.bus, route, f"s{i}", loop).close()
        routes.add(route)
    assert routes == {f"{SUBJECT}.replica1", f"{SUBJECT}.replica2"}
    link = BusCloud(cloud.bus, SUBJECT, loop)
    while (remote := await asyncio.to_thread(link.middle, "lost")).subject.endswith("replica1"):
        await link.close("lost")
    stop.set()  # the replica holding "lost" goes away
    await task
    await second_bus.drain()
    with pytest.raises(ReplicaGone, match="replica that held this sequence is gone"):
        await remote.request(0, torch.randn(1, 2, 64))
    await link.close("lost")
    assert "could not close session lost" in caplog.text
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()
    assert await decode(cloud, "new", prompt, 8) == greedy_tokens(cloud.model, prompt, 8)


async def test_a_whole_model_replica_serves_the_baselines_where_tokens_cross(
    nats_server: NatsServer,
) -> None:
    model = tiny_llama(layers=5)
    parts = HatParts(model, HatSplit(1, 1))
    sessions = CloudSessions(parts, whole=True)
    stop = asyncio.Event()
    subject = f"{SUBJECT}-tokens"
    cloud_bus = await Bus.connect(nats_server.url, "cloud")
    task = asyncio.create_task(serve_cloud(cloud_bus, subject, sessions, stop, replica=REPLICA))
    bus = await Bus.connect(nats_server.url, "device")
    loop = asyncio.get_running_loop()
    prompt = token_batch(batch=1, length=9, seed=4)["input_ids"][0].tolist()
    try:
        await asyncio.sleep(0.2)
        route = await open_session(bus, subject, "sd")
        remote = RemoteMiddle(bus, route, "sd", loop, carries=TOKENS)
        adapter = Adapter(parts, AdapterSpec("decoder")).eval()
        device = DeviceSession(parts, adapter, Sampling(), crossing=Crossing.TOKENS)
        result = await asyncio.to_thread(generate, device, remote, prompt, 16, GammaPolicy())
        assert result.tokens == greedy_tokens(model, prompt, 16)
        assert remote.bytes_sent == remote.bytes_received  # 8 bytes an id, both ways
        with pytest.raises(RemoteError, match="carries one tensor, 'tokens'"):
            await RemoteMiddle(bus, route, "sd", loop).request(0, torch.randn(1, 2, 64))
        await remote.close()
        route = await open_session(bus, subject, "alone")  # as the device opens every sequence
        alone = RemoteMiddle(bus, route, "alone", loop, carries=TOKENS)
        answer = await alone.answered(torch.tensor([prompt]), 16, [])
        assert answer.tokens[0].tolist() == greedy_tokens(model, prompt, 16)
        assert answer.emitted_at is None and sessions.sessions == {}
    finally:
        stop.set()
        await task
        await bus.drain()
        await cloud_bus.drain()


async def test_no_replica_at_all_is_a_clear_error(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, "device")
    try:
        with pytest.raises(ReplicaGone, match="no cloud replica is serving"):
            await open_session(bus, "default.hatinferenceservice.gone.middle", "s1")
    finally:
        await bus.drain()


ENVELOPES = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["middle", "middle", "close", "open", "other"]),
        "session": st.sampled_from(["s1", "s2", "s1", "", "a.b", "x" * 65, "bad session!"]),
        "start": st.sampled_from([0, 0, 1, 3, -1, 70]),
    },
    optional={
        "arrive_at": st.sampled_from([0.5, 1e12, -1.0, "soon"]) | st.floats(),
        "extra": st.integers(),
    },
)
STATES = st.builds(
    lambda n, width, dtype, scale: torch.randn(1, n, width, dtype=dtype) * scale,
    st.sampled_from([1, 2, 5, 65]),
    st.sampled_from([64, 64, 63]),
    st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16]),
    st.sampled_from([1.0, 1.0, float("inf")]),
)


async def test_schema_valid_or_not_no_request_stops_the_cloud(cloud: Setup) -> None:
    """Random envelopes and tensors at the replica: each gets a reply or a refusal, never a
    crash, and the cloud still decodes as the full model afterwards."""
    answered = 0

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(envelope=ENVELOPES, states=STATES)
    def attack(envelope: dict, states: torch.Tensor) -> None:
        nonlocal answered
        future = asyncio.run_coroutine_threadsafe(
            cloud.bus.request(
                f"{SUBJECT}.{REPLICA}", json.dumps(envelope), {HIDDEN: states}, timeout=5
            ),
            loop,
        )
        try:
            future.result(10)
            answered += 1
        except RemoteError:
            pass  # refused, and said why

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(attack)
    cloud.sessions.sessions.clear()  # what the fuzz left open
    prompt = token_batch(batch=1, length=6)["input_ids"][0].tolist()
    assert await decode(cloud, "after-fuzz", prompt, 8) == greedy_tokens(cloud.model, prompt, 8)
    assert answered > 0  # some were valid: the fuzz reached the middle blocks
