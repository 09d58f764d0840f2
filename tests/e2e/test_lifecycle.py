"""A release's life as Helm users live it, on the real control plane: an operator pointed at a
wrong NATS URL, a job that can never succeed, and ``helm uninstall`` while a job runs.

- A wrong ``nats.url``: one log line per attempt naming the URL, backing off, no traceback;
  kopf's ``/healthz`` answers, ``/readyz`` says why the operator is not ready, its Pod has a
  ``NatsUnreachable`` event; ``helm upgrade`` with the right URL makes it ready.
- A PruneJob whose model path does not exist fails on its first attempt (the Job's
  ``podFailurePolicy``), not after two retries.
- ``helm uninstall`` with a running SplitTrainingJob: the pre-delete hook deletes it and waits
  while the operator stops its pods and deletes its JetStream state; nothing is left behind
  and nothing hangs. Along the way its phase never goes back to Pending and ``finalAccuracy``
  stays unset while it runs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.jobstate import job_buckets
from edgeloom_testkit.controlplane import ControlPlane, free_port, http_get, wait_for
from edgeloom_testkit.node_agent import NodeAgent
from edgeloom_testkit.secure_nats import SecureNats, secure_nats

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgeloom"
PHASES = ("Pending", "Running", "Degraded", "Succeeded", "Failed")

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNats]:
    with secure_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


def operator_pod(plane: ControlPlane, namespace: str) -> dict[str, Any] | None:
    """The running operator pod of the release in ``namespace``."""
    pods = plane.kubectl_json(
        "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    running = [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    return running[0] if len(running) == 1 else None


def readyz(pod: dict[str, Any]) -> tuple[int, str]:
    """The operator's ``/readyz``, on its pod IP (where the kubelet's probe reads it)."""
    (container,) = pod["spec"]["containers"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http-ready")
    return http_get(f"http://{pod['status']['podIP']}:{port}/readyz")


def event_reasons(plane: ControlPlane, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the object's events, oldest first."""
    items = plane.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["reason"], e.get("message") or "") for e in items]


def test_a_wrong_nats_url_is_named_once_per_attempt_and_readiness_says_why(
    control_plane: ControlPlane, node_agent: NodeAgent, nats: SecureNats
) -> None:
    plane, system = control_plane, "edgeloom-wrong-nats"
    wrong = f"tls://127.0.0.1:{free_port()}"  # nothing listens there
    plane.install_edgeloom("wrongnats", system, nats, f"nats.url={wrong}")
    try:
        pod = wait_for(lambda: operator_pod(plane, system), 120, "the operator pod running")
        name = pod["metadata"]["name"]
        attempt = f"cannot connect to NATS at {wrong}: "

        def attempts() -> list[str]:
            log = node_agent.pod_log(system, name)
            return [line for line in log.splitlines() if attempt in line]

        wait_for(lambda: len(attempts()) >= 4, 120, "four attempts to reach NATS", 1.0)
        log = node_agent.pod_log(system, name)
        assert "Traceback" not in log
        # capped exponential backoff: each wait at least the one before, up to 30 s
        waits = [
            float(w) for w in re.findall(r"next attempt in ([0-9.]+) s", "\n".join(attempts()))
        ]
        assert waits[:4] == [1, 2, 4, 8], attempts()
        # kopf runs (liveness answers) while readiness says why it is not ready
        (container,) = pod["spec"]["containers"]
        health = next(p["containerPort"] for p in container["ports"] if p["name"] == "http-health")
        assert http_get(f"http://127.0.0.1:{health}/healthz")[0] == 200
        code, body = readyz(pod)
        assert code == 503 and body.startswith(f"not ready: {attempt}"), body
        # and kubectl describe shows it on the operator's Pod
        events = wait_for(
            lambda: [m for r, m in event_reasons(plane, system, name) if r == "NatsUnreachable"],
            60,
            "a NatsUnreachable event on the operator pod",
        )
        assert events[0].startswith(attempt)

        # the right URL: the new operator pod reaches NATS and is ready
        plane.helm(
            "upgrade", "wrongnats", str(CHART), "-n", system, "--reuse-values",
            "--set", f"nats.url={nats.url}", "--wait", "--timeout", "180s", timeout=240,
        )  # fmt: skip

        def ready() -> tuple[int, str] | None:
            fixed = operator_pod(plane, system)
            if fixed is None or fixed["metadata"]["name"] == name:
                return None
            answer = readyz(fixed)
            return answer if answer[0] == 200 else None

        code, body = wait_for(ready, 120, "the fixed operator ready", 1.0)
        assert body == f"ready: connected to NATS at {nats.url}\n"
    finally:
        plane.helm("uninstall", "wrongnats", "-n", system, "--wait", check=False, timeout=300)


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane, node_agent: NodeAgent, nats: SecureNats
) -> Iterator[str]:
    """A release whose job pods stop serving /metrics as soon as they are done."""
    system = "edgeloom-lifecycle"
    control_plane.install_edgeloom(
        "lifecycle", system, nats, "monitoring.jobMetricsLingerSeconds=0"
    )
    yield system
    control_plane.helm("uninstall", "lifecycle", "-n", system, "--wait", check=False, timeout=300)


def test_a_prunejob_that_cannot_succeed_fails_on_its_first_attempt(
    control_plane: ControlPlane, installed: str, namespace: str
) -> None:
    plane = control_plane
    obj = yaml.safe_load((ROOT / "examples" / "prunejob-minilm.yaml").read_text())
    obj["spec"]["model"] = {"path": "/models/not-there"}
    name = obj["metadata"]["name"]
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj))
    plane.kubectl(
        "wait", f"prunejob/{name}", "-n", namespace, "--for=condition=Stalled",
        "--timeout=300s", timeout=330,
    )  # fmt: skip
    status = plane.kubectl_json("get", "prunejob", name, "-n", namespace)["status"]
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "/models/not-there is not a model folder: config.json is missing" in ready["message"]
    (job,) = plane.kubectl_json("get", "jobs", "-n", namespace, "-l", f"edgeloom.io/job={name}")[
        "items"
    ]
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy", failed
    assert job["status"].get("failed") == 1  # one attempt, not backoffLimit + 1
    pods = plane.kubectl_json("get", "pods", "-n", namespace, "-l", f"edgeloom.io/job={name}")
    (pod,) = pods["items"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3


def run_state(server: SecureNats, namespace: str, name: str) -> list[bool]:
    """Whether each of the job's JetStream buckets (state, checkpoints) exists."""

    async def streams() -> set[str]:
        nc = await server.connect()
        infos = await nc.jetstream().streams_info()
        await nc.close()
        return {info.config.name for info in infos if info.config.name}

    buckets = job_buckets(namespace, "SplitTrainingJob", name)
    found = asyncio.run(streams())
    return [f"KV_{buckets.state}" in found, f"OBJ_{buckets.checkpoints}" in found]


def small_splittraining_job() -> dict[str, Any]:
    """The example with a worker per device kind, long enough to be running at uninstall and
    checkpointing every round (so its JetStream state exists)."""
    obj = yaml.safe_load((ROOT / "examples" / "splittraining-mnist1d.yaml").read_text())
    spec = obj["spec"]
    for group in spec["workers"]:
        group["count"] = 1
    spec["participation"]["minWorkers"] = 1
    spec["training"]["rounds"] = 200
    spec["stop"] = {}
    spec["checkpointInterval"] = 1
    return dict(obj)


def test_helm_uninstall_deletes_a_running_job_and_waits_for_its_finalizer(
    control_plane: ControlPlane,
    nats: SecureNats,
    installed: str,
    namespace: str,
) -> None:
    plane = control_plane
    obj = small_splittraining_job()
    name = obj["metadata"]["name"]
    selector = f"edgeloom.io/job={name}"
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj))

    def running() -> dict[str, Any] | None:
        status = plane.kubectl_json("get", "splittrainingjob", name, "-n", namespace).get("status")
        return status if (status or {}).get("progress", {}).get("round", 0) >= 1 else None

    status = wait_for(running, 600, "a round completed", 1.0)
    assert status["phase"] in ("Running", "Degraded")
    assert "finalAccuracy" not in status  # only a finished job has one
    assert run_state(nats, namespace, name) == [True, True]
    assert len(plane.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]) == 4

    try:
        plane.helm("uninstall", "lifecycle", "-n", installed, "--timeout", "300s", timeout=330)
        # the hook waited: the resource and its pods are gone, its run state was deleted by the
        # operator's finalizer (not stripped), and the hook cleaned up after itself
        assert plane.kubectl_json("get", "splittrainingjobs", "-n", namespace)["items"] == []
        left = plane.kubectl_json("get", "jobs,pods", "-n", namespace, "-l", selector)["items"]
        assert left == []
        assert run_state(nats, namespace, name) == [False, False]
        hooks = plane.kubectl_json(
            "get", "jobs,serviceaccounts", "-n", installed, "-l",
            "app.kubernetes.io/component=uninstall",
        )["items"]  # fmt: skip
        assert hooks == []
        wait_for(
            lambda: plane.kubectl_json("get", "deployments", "-n", installed)["items"] == [],
            60,
            "the operator deleted",
        )
    finally:  # on failure, never leave a finalizer that would hang the namespace's deletion
        plane.kubectl(
            "patch", "splittrainingjob", name, "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
    # its phase went Pending (at most at the start) → Running, and never back to Pending, also
    # not while it was being deleted
    phases = [r for r, _ in event_reasons(plane, namespace, name) if r in PHASES]
    started = phases.index("Running")
    assert "Pending" not in phases[started:] and phases.count("Pending") <= 1, phases
