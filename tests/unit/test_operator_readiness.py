"""The operator without NATS: one log line per attempt naming the URL, capped backoff, an event
on its own Pod, and a ``/readyz`` that says why it is not ready."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from edgeloom_operators import jetstream
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.handlers import Operator
from edgeloom_operators.jetstream import NatsLink, NatsUnavailable
from edgeloom_operators.plugin import index
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_operators.readiness import Readiness
from edgeloom_testkit.controlplane import free_port, http_get


def test_readyz_answers_503_with_the_reason_until_ready() -> None:
    readiness = Readiness("connecting to NATS at tls://nats:4222")
    port = readiness.serve(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port}"
        assert http_get(f"{url}/readyz") == (
            503,
            "not ready: connecting to NATS at tls://nats:4222\n",
        )
        readiness.set(True, "connected to NATS at tls://nats:4222")
        assert http_get(f"{url}/readyz") == (200, "ready: connected to NATS at tls://nats:4222\n")
        assert http_get(f"{url}/metrics")[0] == 404
    finally:
        readiness.close()


async def until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream, "BACKOFF_START_S", 0.05)
    monkeypatch.setattr(jetstream, "BACKOFF_MAX_S", 0.2)


@pytest.mark.usefixtures("fast_backoff")
async def test_an_unreachable_nats_is_one_line_per_attempt_naming_the_url_with_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    config = OperatorConfig(nats_url=f"nats://edgeloom:s3cret@127.0.0.1:{port}")
    states: list[tuple[bool, str]] = []

    async def on_state(connected: bool, reason: str) -> None:
        states.append((connected, reason))

    link = NatsLink(config, None, on_state)
    shown = f"nats://***@127.0.0.1:{port}"
    with pytest.raises(NatsUnavailable, match=re.escape(f"connecting to NATS at {shown}")):
        _ = link.client
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(link.connect())
    await until(lambda: len(states) >= 5, "five failed attempts")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    lines = [r for r in caplog.records if r.name.startswith(("edgeloom", "nats"))]
    assert len(lines) in (len(states), len(states) + 1)  # one per attempt (the last may be in)
    assert all(r.exc_info is None for r in lines)  # no traceback
    text = "\n".join(r.getMessage() for r in lines)
    assert "s3cret" not in text and "Traceback" not in text
    assert f"cannot connect to NATS at {shown}: ConnectionRefusedError" in lines[0].getMessage()
    waits = [float(w) for w in re.findall(r"next attempt in ([0-9.]+) s", text)]
    assert waits[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]  # doubling, then capped
    assert all(not connected and shown in reason for connected, reason in states)
    with pytest.raises(NatsUnavailable, match="ConnectionRefusedError"):
        _ = link.client


class EventKube:
    def __init__(self) -> None:
        self.events: list[tuple[dict[str, Any], str, str, str]] = []

    def event(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append((body, type, reason, message))


@pytest.mark.usefixtures("fast_backoff")
async def test_the_operator_reconciles_without_nats_and_says_why_on_its_pod() -> None:
    kube = EventKube()
    port = free_port()
    config = OperatorConfig(
        nats_url=f"tls://127.0.0.1:{port}",
        pod_name="edgeloom-operator-abc",
        pod_uid="uid-1",
        namespace="edgeloom-system",
    )
    operator = Operator(kube, config, index([PruneJobPlugin()]))  # type: ignore[arg-type]
    task = asyncio.create_task(operator.connect_nats(None))
    await until(lambda: len(kube.events) >= 1, "an event on the operator's pod")
    await asyncio.sleep(0.5)  # more attempts, the same error: no more events
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    ((pod, type, reason, message),) = kube.events
    assert pod["kind"] == "Pod" and pod["metadata"] == {
        "name": "edgeloom-operator-abc",
        "namespace": "edgeloom-system",
        "uid": "uid-1",
    }
    assert (type, reason) == ("Warning", "NatsUnreachable")
    assert message.startswith(f"cannot connect to NATS at tls://127.0.0.1:{port}: ")
    assert operator.readiness.state == (False, message)
    with pytest.raises(NatsUnavailable, match=f"127.0.0.1:{port}"):
        _ = operator.nc  # a cleanup that needs NATS retries, with this reason


async def test_a_url_no_attempt_can_use_is_said_once_and_not_retried() -> None:
    kube = EventKube()
    config = OperatorConfig(nats_url="nats://[::1", pod_name="op", pod_uid="u")
    operator = Operator(kube, config, index([PruneJobPlugin()]))  # type: ignore[arg-type]
    await asyncio.wait_for(operator.connect_nats(None), 10)  # returns: nothing to wait for
    ((_, type, reason, message),) = kube.events
    assert (type, reason) == ("Warning", "NatsUnreachable")
    assert message == "cannot use the NATS URL nats://[::1: nats: invalid connect url option"
    assert operator.readiness.state == (False, message)
