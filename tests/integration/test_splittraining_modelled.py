"""``emulation: modelled``: two runs of one file and seed keep the same virtual clocks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgeloom.bench.jobs import run_job
from edgeloom.local.nats_server import NatsServer
from edgeloom_testkit.kinds.splittraining import SMALL_SPLIT_JOB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _curve(nats: NatsServer, name: str, method: str) -> list[dict[str, Any]]:
    job = copy.deepcopy(SMALL_SPLIT_JOB)
    job["metadata"]["name"] = name
    job["spec"]["emulation"] = "modelled"
    job["spec"]["method"] = method
    result = run_job(job, nats.url, in_process=True)
    history = result.model_dump(mode="json")["history"]
    return [{k: v for k, v in point.items() if k != "wall_time_seconds"} for point in history]


def _without_bytes(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in point.items() if k != "bytes_total"} for point in curve]


@pytest.mark.parametrize("method", ["mergesfl", "sfl", "fedavg"])
def test_two_runs_of_one_file_and_seed_have_the_same_virtual_times(
    nats_server: NatsServer, method: str
) -> None:
    first = _curve(nats_server, "first", method)
    second = _curve(nats_server, "second", method)
    assert len(first) == SMALL_SPLIT_JOB["spec"]["training"]["rounds"]
    assert all(point["virtual_time_seconds"] > 0 for point in first)
    # every round's virtual time, accuracy and loss; the bytes within a few per megabyte: the
    # control messages around the tensors (request ids, rejoin calls while workers join) follow
    # when the real processes happened to join
    assert _without_bytes(first) == _without_bytes(second)
    assert [p["bytes_total"] for p in second] == [
        pytest.approx(p["bytes_total"], rel=1e-4) for p in first
    ]


def test_a_run_that_does_not_stop_at_its_target_still_records_when_it_got_there(
    nats_server: NatsServer,
) -> None:
    job = copy.deepcopy(SMALL_SPLIT_JOB)
    job["metadata"]["name"] = "ontarget"
    job["spec"]["emulation"] = "modelled"
    job["spec"]["stop"] = {"targetAccuracy": 0.01, "stopAtTarget": False}  # met in round 1
    result = run_job(job, nats_server.url, in_process=True)
    first = result.history[0]["virtual_time_seconds"]
    assert len(result.history) == SMALL_SPLIT_JOB["spec"]["training"]["rounds"]
    assert result.message == "3 rounds completed"
    assert result.summary["time_to_target_s"] == pytest.approx(first, abs=1e-3)
    assert result.status["timeToTargetSeconds"] == pytest.approx(first, abs=1e-3)
