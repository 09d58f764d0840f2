"""Worker-health verdicts (pure): which pods are workers, stale ones, stragglers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from edgeloom_operators.prometheus import Sample
from edgeloom_operators.splittraining.health import (
    STALE,
    STRAGGLER,
    WorkerPod,
    find_unhealthy,
    round_time_query,
    stale_query,
    worker_pods,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def pod(
    name: str, index: int, offset: int = 0, phase: str = "Running", age_s: float = 300, **meta: Any
) -> dict[str, Any]:
    started = (NOW - timedelta(seconds=age_s)).isoformat().replace("+00:00", "Z")
    env = [{"name": "EDGELOOM_INDEX_OFFSET", "value": str(offset)}] if offset else []
    return {
        "metadata": {
            "name": name,
            "labels": {"edgeloom.io/role": "worker"},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            **meta,
        },
        "spec": {"containers": [{"name": "worker", "env": env}]},
        "status": {"phase": phase, "startTime": started},
    }


def test_worker_pods_have_global_indices_and_skip_finished_or_deleted_ones() -> None:
    pods = [
        pod("j-worker-b-0", 0, offset=4, age_s=10),
        pod("j-worker-a-1", 1),
        pod("j-worker-a-0", 0, phase="Succeeded"),
        pod("j-worker-a-2", 2, deletionTimestamp="2026-12-01T11:59:00Z"),
        {**pod("j-server-0", 0), "metadata": {"name": "j-server-0", "labels": {}}},
    ]
    pods[1]["metadata"]["annotations"]["edgeloom.io/unhealthy"] = "Straggler: slow"
    single = pod("j-worker-c-x1", 0, offset=7)  # a group of one: a plain Job, no index
    del single["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
    assert worker_pods([*pods, single], NOW) == [
        WorkerPod(1, "j-worker-a-1", True, 300.0),
        WorkerPod(4, "j-worker-b-0", False, 10.0),
        WorkerPod(7, "j-worker-c-x1", False, 300.0),
    ]


def test_queries_select_the_jobs_pods_and_its_server() -> None:
    workers = [WorkerPod(0, "j-worker-a.0", False, 1.0), WorkerPod(1, "j-worker-a-1", False, 1.0)]
    stale = stale_query("ns", workers, 30)
    assert 'pod=~"j-worker-a\\\\.0|j-worker-a-1"' in stale
    assert "[30s]) == 0" in stale and "[1h]) == 1" in stale
    times = round_time_query("ns", "j", 45.5)
    assert 'name="j",role="server"' in times and "[45.5s]" in times


def samples(times: dict[int, float]) -> list[Sample]:
    return [Sample({"worker": str(i)}, t) for i, t in times.items()]


def test_stale_workers_and_stragglers() -> None:
    workers = [WorkerPod(i, f"w-{i}", False, 300.0) for i in range(5)]
    times = samples({0: 1.0, 1: 1.1, 2: 0.9, 3: 4.0, 4: 1.0})
    stale = [Sample({"pod": "w-1", "namespace": "ns"}, 0.0)]
    verdicts = find_unhealthy(workers, stale, times, 60, 3.0)
    assert [(v.worker.index, v.reason) for v in verdicts] == [(1, STALE), (3, STRAGGLER)]
    assert "4.0x" in verdicts[1].detail
    assert find_unhealthy(workers, [], times, 60, 4.5) == []


def test_no_straggler_verdict_without_a_majority_or_for_a_young_replacement() -> None:
    pair = [WorkerPod(0, "w-0", False, 300.0), WorkerPod(1, "w-1", False, 300.0)]
    assert find_unhealthy(pair, [], samples({0: 1.0, 1: 10.0}), 60, 3.0) == []
    young = [*(WorkerPod(i, f"w-{i}", False, 300.0) for i in range(3)), WorkerPod(3, "n", False, 5)]
    assert find_unhealthy(young, [], samples({0: 1, 1: 1, 2: 1, 3: 9}), 60, 3.0) == []
