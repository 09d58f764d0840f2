"""The e2e infrastructure itself: control plane, fake Nodes, node agent, and teardown."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeloom_testkit.controlplane import (
    DEFAULT_NODES,
    KUBE_VERSION,
    PROFILE_LABEL,
    TIER_LABEL,
    CommandFailed,
    ControlPlane,
    FakeNode,
    pid_alive,
    register_nodes,
    start_control_plane,
    wait_for,
)
from edgeloom_testkit.node_agent import NodeAgent, PathMap, expand_vars, pod_ip

pytestmark = pytest.mark.e2e

PY = sys.executable


def pod_manifest(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A single-container pod running ``python -c script`` with ``spec`` merged in."""
    container = {"name": "main", "image": "edgeloom:e2e", "command": [PY, "-c", script]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def get_pod(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(plane.kubectl_json("get", "pod", name, "-n", namespace))


def wait_phase(
    plane: ControlPlane, namespace: str, name: str, phases: set[str], timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        pod = get_pod(plane, namespace, name)
        return pod if pod.get("status", {}).get("phase") in phases else None

    return wait_for(reached, timeout, f"pod {namespace}/{name} in {sorted(phases)}", 0.3)


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["status"]["containerStatuses"][0]["state"]["terminated"])


# -- pure pieces of the node agent --------------------------------------------------------------


def test_expand_vars_follows_kubernetes_rules() -> None:
    env = {"A": "x", "B": "y"}
    assert expand_vars("$(A)-$(B)", env) == "x-y"
    assert expand_vars("$$(A) $(MISSING) $(A", env) == "$(A) $(MISSING) $(A"
    assert expand_vars("cost $5", env) == "cost $5"


def test_path_map_rewrites_mount_paths_and_flag_values(tmp_path: Path) -> None:
    paths = (
        PathMap()
        .with_mapping("/etc/app", tmp_path / "vol")
        .with_mapping("/etc/app/special", tmp_path / "other")
    )
    assert paths.rewrite("/etc/app/config.yaml") == f"{tmp_path}/vol/config.yaml"
    assert paths.rewrite("/etc/app/special/x") == f"{tmp_path}/other/x"
    assert paths.rewrite("--config=/etc/app") == f"--config={tmp_path}/vol"
    assert paths.rewrite("/etc/application") == "/etc/application"
    assert paths.rewrite("name=/etc/app") == "name=/etc/app"  # not a flag


# -- the control plane --------------------------------------------------------------------------


def test_version_is_stamped_and_nodes_are_registered(control_plane: ControlPlane) -> None:
    assert control_plane.version()["gitVersion"] == KUBE_VERSION
    client_view = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert client_view["serverVersion"]["gitVersion"] == KUBE_VERSION
    assert control_plane.helm("version", "--short").stdout.startswith("v3.")

    nodes = {n["metadata"]["name"]: n for n in control_plane.kubectl_json("get", "nodes")["items"]}
    assert sorted(nodes) == sorted(n.name for n in DEFAULT_NODES)
    for fake in DEFAULT_NODES:
        node = nodes[fake.name]
        assert fake.labels.items() <= node["metadata"]["labels"].items()
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert not node["spec"].get("taints")
    assert nodes["cloud-0"]["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert nodes["edge-0"]["metadata"]["labels"][TIER_LABEL] == "edge"


def test_kubectl_failure_carries_stderr(control_plane: ControlPlane) -> None:
    with pytest.raises(CommandFailed, match="not found"):
        control_plane.kubectl("get", "configmap", "no-such-thing", "-n", "default")


# -- the node agent through real controllers ----------------------------------------------------

SEEN_SCRIPT = """
import json, os, sys
node, settings = sys.argv[1], sys.argv[2]
seen = {
    "token": os.environ["DEMO_TOKEN"],
    "settings": open(settings).read(),
    "node": node,
    "pod": os.environ["POD_NAME"],
    "kubernetes_host": os.environ.get("KUBERNETES_SERVICE_HOST"),
}
with open(os.environ["MESSAGE_FILE"], "w") as f:
    json.dump(seen, f)
"""


def test_job_runs_on_the_selected_edge_node_with_secret_and_configmap(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    profile = "jetson-tx2"
    (expected_node,) = [n.name for n in DEFAULT_NODES if n.labels.get(PROFILE_LABEL) == profile]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "demo-secret"},
        "stringData": {"token": "s3cret"},
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "demo-settings"},
        "data": {"settings.txt": "rounds: 3\n"},
    }
    env = [
        {
            "name": "DEMO_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "demo-secret", "key": "token"}},
        },
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MESSAGE_FILE", "value": "/dev/termination-log"},
    ]
    template = pod_manifest(
        "unused",
        SEEN_SCRIPT,
        nodeSelector={TIER_LABEL: "edge", PROFILE_LABEL: profile},
        volumes=[{"name": "settings", "configMap": {"name": "demo-settings"}}],
        container={
            "args": ["$(NODE_NAME)", "/etc/demo/settings.txt"],
            "env": env,
            "volumeMounts": [{"name": "settings", "mountPath": "/etc/demo"}],
        },
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
    control_plane.apply(secret, config_map, job, namespace=namespace)

    def complete() -> bool:
        status = control_plane.kubectl_json("get", "job", "probe", "-n", namespace)["status"]
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        assert conditions.get("Failed") != "True", status
        return conditions.get("Complete") == "True"

    wait_for(complete, 90, "job probe to complete")
    (pod,) = control_plane.kubectl_json(
        "get", "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name=probe"
    )["items"]
    assert pod["spec"]["nodeName"] == expected_node
    assert pod["status"]["phase"] == "Succeeded"
    state = terminated(pod)
    assert state["exitCode"] == 0
    assert json.loads(state["message"]) == {
        "token": "s3cret",
        "settings": "rounds: 3\n",
        "node": expected_node,
        "pod": pod["metadata"]["name"],
        "kubernetes_host": None,
    }


def test_failing_pod_reports_exit_code_and_log_tail(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    pod = pod_manifest(
        "fails",
        "print('boom: bad input'); raise SystemExit(3)",
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    control_plane.apply(pod, namespace=namespace)
    status = wait_phase(control_plane, namespace, "fails", {"Failed", "Succeeded"})
    assert status["status"]["phase"] == "Failed"
    state = terminated(status)
    assert state["exitCode"] == 3
    assert state["reason"] == "Error"
    assert "boom: bad input" in state["message"]
    assert "boom: bad input" in node_agent.pod_log(namespace, "fails")


def test_deleting_a_running_pod_kills_its_process(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # forces the SIGKILL after the grace
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    control_plane.apply(
        pod_manifest("sleeper", script, terminationGracePeriodSeconds=1), namespace=namespace
    )
    pod = wait_phase(control_plane, namespace, "sleeper", {"Running"})
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert pod["status"]["podIP"] == pod_ip(pod) != "127.0.0.1"  # an address of its own
    assert pod["status"]["hostIP"] == "127.0.0.1"
    pid = node_agent.container_pid(namespace, "sleeper")
    assert pid is not None and pid_alive(pid)
    wait_for(lambda: "up" in node_agent.pod_log(namespace, "sleeper"), 30, "the handler")

    control_plane.kubectl("delete", "pod", "sleeper", "-n", namespace, "--timeout=30s")
    assert not pid_alive(pid)
    gone = control_plane.kubectl("get", "pod", "sleeper", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr
    assert node_agent.container_state(namespace, "sleeper")["terminated"]["exitCode"] == 137


def test_on_failure_restarts_the_container_and_keeps_its_empty_dir(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    script = (
        "import os, sys\n"
        "marker = os.path.join(sys.argv[1], 'tried')\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close(); print('first try', flush=True); sys.exit(1)\n"
        "print('second try', flush=True)\n"
    )
    pod = pod_manifest(
        "flaky",
        script,
        restartPolicy="OnFailure",
        volumes=[{"name": "scratch", "emptyDir": {}}],
        container={
            "args": ["/scratch"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        },
    )
    control_plane.apply(pod, namespace=namespace)
    status = wait_phase(control_plane, namespace, "flaky", {"Succeeded", "Failed"})
    assert status["status"]["phase"] == "Succeeded"
    container = status["status"]["containerStatuses"][0]
    assert container["restartCount"] == 1
    assert container["lastState"]["terminated"]["exitCode"] == 1
    log = node_agent.pod_log(namespace, "flaky")
    assert log.index("first try") < log.index("second try")


def test_deployment_with_init_container_becomes_available(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    init = {
        "name": "prepare",
        "image": "edgeloom:e2e",
        "command": [PY, "-c", "import sys; open(sys.argv[1], 'w').write('prepared')"],
        "args": ["/work/state"],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    main = {
        "name": "main",
        "image": "edgeloom:e2e",
        "command": [PY, "-c", "import sys, time; print(open(sys.argv[1]).read()); time.sleep(600)"],
        "args": ["/work/state"],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {TIER_LABEL: "cloud"},
                    "initContainers": [init],
                    "containers": [main],
                    "volumes": [{"name": "work", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 2,
                },
            },
        },
    }
    control_plane.apply(deployment, namespace=namespace)
    control_plane.kubectl(
        "rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s", timeout=90
    )
    pods = control_plane.kubectl_json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("cloud-")
        name = pod["metadata"]["name"]
        wait_for(lambda n=name: "prepared" in node_agent.pod_log(namespace, n), 30, "main's log")
        init_state = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
        assert init_state["exitCode"] == 0


RBAC_SCRIPT = """
import json, os
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

try:
    config.load_incluster_config()
    mode = "in-cluster"
except config.ConfigException:
    config.load_kube_config()
    mode = "kubeconfig"
namespace = os.environ["POD_NAMESPACE"]
core = client.CoreV1Api()
seen = {"mode": mode}
seen["greeting"] = core.read_namespaced_config_map("visible", namespace).data["greeting"]
try:
    core.list_namespaced_secret(namespace)
    seen["secrets"] = "allowed"
except ApiException as err:
    seen["secrets"] = err.status
review = client.AuthenticationV1Api().create_self_subject_review(
    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
)
seen["user"] = review.status.user_info.username
with open(os.environ["MESSAGE_FILE"], "w") as f:
    json.dump(seen, f)
"""


def test_pod_acts_as_its_service_account_under_rbac(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "configmap-getter"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader-gets-configmaps"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-getter",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "visible"},
            "data": {"greeting": "hello"},
        },
    ]
    env = [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MESSAGE_FILE", "value": "/dev/termination-log"},
    ]
    pod = pod_manifest("reader", RBAC_SCRIPT, serviceAccountName="reader", container={"env": env})
    control_plane.apply(*objects, pod, namespace=namespace)
    status = wait_phase(control_plane, namespace, "reader", {"Succeeded", "Failed"}, 90)
    log = node_agent.pod_log(namespace, "reader")
    assert status["status"]["phase"] == "Succeeded", log
    assert json.loads(terminated(status)["message"]) == {
        "mode": "kubeconfig",
        "greeting": "hello",
        "secrets": 403,
        "user": f"system:serviceaccount:{namespace}:reader",
    }


def test_helm_install_waits_for_a_chart_deployment(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.36.0-0'\n"
    )
    (chart / "values.yaml").write_text(f"python: {PY}\n")
    (chart / "templates" / "deployment.yaml").write_text(
        """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers:
        - name: main
          image: edgeloom:e2e
          command: [{{ .Values.python | quote }}, "-c", "import time; time.sleep(600)"]
"""
    )
    control_plane.helm(
        "install", "demo", str(chart), "-n", namespace, "--wait", "--timeout", "60s", timeout=90
    )
    (release,) = json.loads(control_plane.helm("list", "-n", namespace, "-o", "json").stdout)
    assert release["status"] == "deployed"
    deployment = control_plane.kubectl_json("get", "deployment", "demo", "-n", namespace)
    assert deployment["status"]["availableReplicas"] == 1


# -- teardown -----------------------------------------------------------------------------------


def processes_under(directory: Path) -> list[int]:
    """Live processes whose command line or working directory mentions ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (str(directory) in cmdline or cwd.startswith(str(directory))) and pid_alive(
            int(entry.name)
        ):
            found.append(int(entry.name))
    return found


def test_stopping_leaves_no_processes(tmp_path: Path) -> None:
    """A second, private control plane + agent; a pod whose process has a child of its own."""
    plane = start_control_plane(tmp_path / "plane")
    try:
        register_nodes(plane, [FakeNode("solo-0", {TIER_LABEL: "edge"}, {"cpu": "2"})])
        with NodeAgent(plane, ["solo-0"], tmp_path / "node"):
            spawner = (
                "import subprocess, sys, time\n"
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                "time.sleep(600)\n"
            )
            plane.kubectl("create", "namespace", "lifecycle")
            wait_for(
                lambda: (
                    plane.kubectl("get", "sa", "default", "-n", "lifecycle", check=False).returncode
                    == 0
                ),
                30,
                "the default ServiceAccount",
            )
            plane.apply(pod_manifest("spawner", spawner), namespace="lifecycle")
            wait_phase(plane, "lifecycle", "spawner", {"Running"})
            # the pod's process and its child run in the pod directory
            wait_for(lambda: len(processes_under(tmp_path / "node")) >= 2, 30, "two processes")
            assert len(processes_under(tmp_path / "plane")) == 4
    finally:
        plane.stop()
    assert processes_under(tmp_path) == []
    assert not any(pid_alive(pid) for pid in plane.pids)
