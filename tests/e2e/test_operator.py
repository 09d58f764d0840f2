"""The operator, installed by the real helm, reconciling real resources on a real control plane.

``kubectl apply`` an example of each kind; the real scheduler places the operator's Jobs on
the fake cloud and edge nodes, the node agent runs the pods (``edgeloom serve``), the jobs
report over a real nats-server, and the resources reach Succeeded with their results in
status. Along the way a worker pod and the operator itself are killed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest
import yaml
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from edgeloom.api.jobstate import job_buckets
from edgeloom.api.kinds.splittraining import SplitTrainingJobStatus
from edgeloom.api.status import Phase
from edgeloom.runtime.bus import Bus
from edgeloom_testkit.controlplane import ControlPlane, wait_for
from edgeloom_testkit.node_agent import NodeAgent
from edgeloom_testkit.secure_nats import SecureNats, secure_nats

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgeloom"
SYSTEM = "edgeloom-system"
CLOUD = {"cloud-0", "cloud-1"}
EDGE = {"edge-0", "edge-1", "edge-2", "edge-3"}

pytestmark = pytest.mark.timeout(1500)


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNats]:
    with secure_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane, node_agent: NodeAgent, nats: SecureNats
) -> Iterator[str]:
    """``helm install`` of the chart against the test's nats-server; yields the release name."""
    control_plane.install_edgeloom("edgeloom", SYSTEM, nats)
    yield "edgeloom"
    control_plane.helm("uninstall", "edgeloom", "-n", SYSTEM, "--wait", check=False, timeout=120)


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return plane.kubectl_json("get", kind, name, "-n", namespace)


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    return plane.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]


def operator_pod(plane: ControlPlane) -> dict[str, Any] | None:
    running = [
        p
        for p in pods(plane, SYSTEM, "app.kubernetes.io/component=operator")
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    return running[0] if running else None


def events(plane: ControlPlane, namespace: str, name: str) -> list[str]:
    items = plane.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return [e["reason"] for e in items]


def run_state_exists(server: SecureNats, namespace: str, name: str) -> tuple[bool, bool]:
    """Whether the job's KV state and checkpoint buckets are in JetStream."""

    async def check() -> tuple[bool, bool]:
        nc = await server.connect()
        js = nc.jetstream()
        buckets = job_buckets(namespace, "SplitTrainingJob", name)
        found = []
        for stream in (f"KV_{buckets.state}", f"OBJ_{buckets.checkpoints}"):
            try:
                await js.stream_info(stream)
                found.append(True)
            except NotFoundError:
                found.append(False)
        await nc.close()
        return found[0], found[1]

    return asyncio.run(check())


def role_creds(plane: ControlPlane, namespace: str, name: str, folder: Path) -> dict[str, Path]:
    """Each role's ``.creds`` from the job's Secret, as its pods mount them."""
    secret = plane.kubectl_json("get", "secret", f"{name}-nats", "-n", namespace)
    out = {}
    for key, value in secret["data"].items():
        if key.endswith(".creds"):
            out[key.removesuffix(".creds")] = folder / key
            out[key.removesuffix(".creds")].write_bytes(base64.b64decode(value))
    return out


async def attempts_outside_the_job(
    server: SecureNats, creds: dict[str, Path], namespace: str, name: str
) -> dict[str, Any]:
    """What a pod of this job may not do, each tried with its own credentials: reach another
    job (``other``) and, as a worker, speak for its coordinator. Returns the server's
    refusals, and whether another job's store could be read."""
    other = "edgeloom.other-ns.splittrainingjob.other"
    mine = f"edgeloom.{namespace}.splittrainingjob.{name}"
    admin = await server.connect()  # another job's state, for the coordinator to try
    others = job_buckets("other-ns", "SplitTrainingJob", "other").state
    kv = await admin.jetstream().create_key_value(bucket=others)
    await kv.put("run", b"secret weights")
    out: dict[str, Any] = {}
    for role, tries in (
        ("server", [f"{other}.status", f"{other}.worker.0", f"{other}.result"]),
        ("worker", [f"{mine}.status", f"{mine}.result", f"{mine}.control", f"{other}.join"]),
    ):
        errors: list[str] = []

        async def record(err: Exception, into: list[str] = errors) -> None:
            into.append(str(err))

        nc = await nats_client.connect(
            server.url,
            user_credentials=str(creds[role]),
            tls=server.ssl_context(),
            error_cb=record,
            allow_reconnect=False,
            inbox_prefix=f"_INBOX.{namespace}.splittrainingjob.{name}.{role}",
        )
        for subject in tries:
            await nc.publish(subject, b"{}")
        await nc.subscribe(f"{other}.join" if role == "server" else f"{mine}.join")
        await nc.flush()
        await asyncio.sleep(0.5)
        out[role] = [e for e in errors if "permissions violation" in e.lower()]
        if role == "server":
            try:
                await (await nc.jetstream().key_value(others)).get("run")
                out["read_other_store"] = True
            except NatsTimeout:
                out["read_other_store"] = False
        await nc.close()
    await admin.jetstream().delete_key_value(others)
    await admin.close()
    return out


async def forge_succeeded_report(server: SecureNats, namespace: str, name: str) -> None:
    bus = await Bus.connect(server.admin, "forger")
    forged = SplitTrainingJobStatus(phase=Phase.SUCCEEDED, final_accuracy=1.0)
    await bus.publish(f"edgeloom.{namespace}.splittrainingjob.{name}.status", forged)
    await bus.drain()


def test_the_chart_installs_a_running_operator_with_its_crds(
    control_plane: ControlPlane, installed: str
) -> None:
    plane = control_plane
    assert operator_pod(plane) is not None
    crds = {c["metadata"]["name"] for c in plane.kubectl_json("get", "crd")["items"]}
    assert {"splittrainingjobs.edgeloom.io", "prunejobs.edgeloom.io"} <= crds
    explained = plane.kubectl("explain", "splittrainingjob.spec.workers").stdout
    assert "Worker groups with device profiles" in explained
    assert "deviceProfileLabel" in explained
    assert (
        "Fraction of the transformer blocks"
        in plane.kubectl("explain", "prunejob.spec.ratio").stdout
    )
    # the operator runs as its own least-privilege ServiceAccount
    sa = f"system:serviceaccount:{SYSTEM}:{operator_pod(plane)['spec']['serviceAccountName']}"
    can = plane.kubectl(
        "auth", "can-i", "patch", "splittrainingjobs", "--subresource=status", "--as", sa, "-A"
    )
    assert can.stdout.strip() == "yes"
    cannot = plane.kubectl("auth", "can-i", "delete", "nodes", "--as", sa, check=False)
    assert cannot.stdout.strip() == "no"


INVALID = [
    ("splittraining-mnist1d.yaml", ["spec", "method"], "quantum", "spec.method"),
    ("splittraining-mnist1d.yaml", ["spec", "workers", 0, "count"], -1, "spec.workers[0].count"),
    ("splittraining-mnist1d.yaml", ["spec", "workers"], None, "spec.workers: Required value"),
    ("splittraining-mnist1d.yaml", ["spec", "training", "minBatchSize"], 500, "minBatchSize"),
    ("prunejob-minilm.yaml", ["spec", "ratio"], 1.5, "spec.ratio"),
    ("prunejob-minilm.yaml", ["spec", "model", "path"], "/models/x", "exactly one"),
]


@pytest.mark.parametrize(("file", "path", "value", "named"), INVALID, ids=[i[3] for i in INVALID])
def test_the_api_server_refuses_invalid_resources_naming_the_field(
    control_plane: ControlPlane,
    installed: str,
    namespace: str,
    file: str,
    path: list[Any],
    value: Any,
    named: str,
) -> None:
    obj = example(file)
    *parents, last = path
    target = obj
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    kind = obj["kind"].lower() + "s"
    assert control_plane.kubectl_json("get", kind, "-n", namespace)["items"] == []


def test_a_splittrainingjob_runs_to_succeeded_through_a_killed_worker_and_operator(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    nats: SecureNats,
    installed: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    plane = control_plane
    path = ROOT / "examples" / "splittraining-mnist1d.yaml"
    name = example("splittraining-mnist1d.yaml")["metadata"]["name"]
    plane.kubectl("apply", "-n", namespace, "-f", str(path))
    selector = f"edgeloom.io/job={name}"

    # the scheduler places the server in the cloud and the ten workers on edge nodes
    def placed() -> list[dict[str, Any]] | None:
        found = pods(plane, namespace, selector)
        ok = len(found) == 11 and all(p["spec"].get("nodeName") for p in found)
        return found if ok else None

    placed_pods = wait_for(placed, 120, "11 pods placed")
    roles = {
        p["metadata"]["name"]: p["metadata"]["labels"]["edgeloom.io/role"] for p in placed_pods
    }
    nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in placed_pods}
    assert {nodes[p] for p, r in roles.items() if r == "server"} <= CLOUD
    assert {nodes[p] for p, r in roles.items() if r == "worker"} <= EDGE

    def round_at_least(n: int) -> dict[str, Any] | None:
        status = get(plane, "splittrainingjob", name, namespace).get("status") or {}
        return status if (status.get("progress") or {}).get("round", 0) >= n else None

    running = wait_for(lambda: round_at_least(2), 600, "two rounds reported in status", 1.0)
    assert running["phase"] in ("Running", "Degraded")
    assert running["observedGeneration"] == 1

    # zero trust: each role's own credentials (from the job's Secret, as its pods mount them)
    # are refused by the server wherever they must not reach
    creds = role_creds(plane, namespace, name, tmp_path)
    assert sorted(creds) == ["server", "worker"]
    refused = asyncio.run(attempts_outside_the_job(nats, creds, namespace, name))
    assert len(refused["server"]) == 4, refused  # another job's subjects: 3 publishes, 1 sub
    assert len(refused["worker"]) == 5, refused  # its coordinator's subjects, another job's
    assert refused["read_other_store"] is False
    # a forged terminal report (as the admin: the roles' users cannot publish one) does not end
    # the job while its coordinator's Job runs
    asyncio.run(forge_succeeded_report(nats, namespace, name))
    time.sleep(3)
    assert get(plane, "splittrainingjob", name, namespace)["status"]["phase"] != "Succeeded"
    # and NATS speaks TLS only
    with pytest.raises(Exception, match=r"(?i)tls|ssl"):
        asyncio.run(
            nats_client.connect(nats.url.replace("tls://", "nats://"), allow_reconnect=False)
        )

    # kill a worker pod: its Job replaces it and the job goes on
    victim = next(p for p, r in sorted(roles.items()) if r == "worker")
    plane.kubectl("delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force")

    def replaced() -> bool:
        workers = [
            p
            for p in pods(plane, namespace, f"{selector},edgeloom.io/role=worker")
            if p["metadata"]["name"] != victim
        ]
        return len(workers) == 10

    wait_for(replaced, 120, "the killed worker replaced")

    # kill the operator mid-job: its Deployment restarts it and it resumes
    old = operator_pod(plane)
    assert old is not None
    plane.kubectl("delete", "pod", old["metadata"]["name"], "-n", SYSTEM, "--wait=false")
    wait_for(
        lambda: (
            (p := operator_pod(plane)) is not None
            and p["metadata"]["uid"] != old["metadata"]["uid"]
        ),
        120,
        "a new operator pod",
    )

    plane.kubectl(
        "wait",
        f"splittrainingjob/{name}",
        "-n",
        namespace,
        "--for=condition=Ready",
        "--timeout=900s",
        timeout=960,
    )
    done = get(plane, "splittrainingjob", name, namespace)
    status = done["status"]
    assert status["phase"] == "Succeeded"
    assert 0.3 < status["finalAccuracy"] <= 1.0  # ten classes: chance is 0.1
    assert status["observedGeneration"] == 1
    assert status["progress"]["round"] >= 2
    jobs = plane.kubectl_json("get", "jobs", "-n", namespace, "-l", selector)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(
        [
            f"{name}-server",
            f"{name}-worker-jetson-nano",
            f"{name}-worker-jetson-tx2",
            f"{name}-worker-jetson-agx",
        ]
    )  # the restarted operator created no duplicates
    reasons = events(plane, namespace, name)
    assert "Created" in reasons and "Succeeded" in reasons
    assert "SpecChangeNotApplied" not in reasons  # the restarted operator re-applied cleanly

    # printer columns, and nothing for kubectl diff to change (the operator never writes spec)
    table = plane.kubectl("get", "splittrainingjob", name, "-n", namespace).stdout
    assert table.split()[:7] == ["NAME", "PHASE", "READY", "REASON", "PROGRESS", "ACCURACY", "AGE"]
    assert "Succeeded" in table
    diff = plane.kubectl("diff", "-n", namespace, "-f", str(path), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr

    # deleting the resource removes every child, and its finalizer the run's JetStream state
    assert done["metadata"]["finalizers"] == ["edgeloom.io/run-state"]
    assert run_state_exists(nats, namespace, name) == (True, True)
    plane.kubectl("delete", "splittrainingjob", name, "-n", namespace, "--wait=true", timeout=120)
    assert run_state_exists(nats, namespace, name) == (False, False)

    def children_gone() -> bool:
        left = plane.kubectl_json(
            "get", "jobs,pods,configmaps,secrets", "-n", namespace, "-l", selector
        )
        return not left["items"]

    wait_for(children_gone, 120, "every child deleted", 1.0)


def test_a_prunejob_prunes_minilm_on_a_cloud_node(
    control_plane: ControlPlane, installed: str, namespace: str
) -> None:
    plane = control_plane
    obj = example("prunejob-minilm.yaml")
    name = obj["metadata"]["name"]
    obj["spec"]["calibration"]["samples"] = 32  # keep the e2e tier quick; the bench does more
    obj["spec"]["evaluation"]["samples"] = 64
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj))
    plane.kubectl(
        "wait",
        f"prunejob/{name}",
        "-n",
        namespace,
        "--for=condition=Ready",
        "--timeout=600s",
        timeout=660,
    )
    status = get(plane, "prunejob", name, namespace)["status"]
    assert status["phase"] == "Succeeded"
    assert status["paramsAfter"] < status["paramsBefore"]
    assert status["qualityMetric"] == "embedding_fidelity"
    assert 0.5 < status["qualityAfter"] <= 1.0
    assert status["progress"]["stage"] == "Done"

    def finished_pod() -> dict[str, Any] | None:  # the report can beat the pod's exit
        (pod,) = pods(plane, namespace, f"edgeloom.io/job={name}")
        return pod if pod["status"].get("phase") == "Succeeded" else None

    pod = wait_for(finished_pod, 120, "the pruner pod to succeed")  # after its metrics linger
    assert pod["spec"]["nodeName"] in CLOUD
    # the pod's termination message is the final status, for an operator that missed the report
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert json.loads(message)["phase"] == "Succeeded"
    table = plane.kubectl("get", "prunejob", name, "-n", namespace).stdout
    assert "Succeeded" in table and "comp" in table
