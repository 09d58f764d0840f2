"""k3s-edge on the real control plane: manifests validated by the API server, labels applied.

Every manifest in k3s-edge/manifests is applied with ``--dry-run=server --validate=strict``
after installing k3s's HelmChart CRD (k3s-edge/tests/helm.cattle.io_helmcharts.yaml), so a
misspelt or unknown field fails. ``label-node.sh`` labels and taints a fresh Node with the
real kubectl, and the real scheduler then places a pod built like the operator's edge workers
on it, and refuses one without the toleration.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom_operators.render import DEVICE_PROFILE_LABEL, NODE_TIER_LABEL, Placement
from edgeloom_testkit.controlplane import (
    ControlPlane,
    FakeNode,
    kubectl_binary,
    register_nodes,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "k3s-edge"
MANIFESTS = sorted((EDGE / "manifests").glob("*.yaml"))
HELMCHART_CRD = EDGE / "tests" / "helm.cattle.io_helmcharts.yaml"
NODE = "jetson-orin-e2e"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def helmchart_crd(control_plane: ControlPlane) -> Iterator[None]:
    control_plane.kubectl("apply", "--server-side", "-f", str(HELMCHART_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/helmcharts.helm.cattle.io", "--timeout=60s"
    )
    yield
    control_plane.kubectl("delete", "-f", str(HELMCHART_CRD), "--wait=false")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_passes_server_side_validation(
    control_plane: ControlPlane, helmchart_crd: None, manifest: Path
) -> None:
    proc = control_plane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", str(manifest), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout


def test_unknown_helmchart_field_is_refused(
    control_plane: ControlPlane, helmchart_crd: None
) -> None:
    manifest = yaml.safe_load((EDGE / "manifests" / "edgeloom-helmchart.yaml").read_text())
    manifest["spec"]["targetNamspace"] = manifest["spec"].pop("targetNamespace")
    proc = control_plane.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-",
        input=yaml.safe_dump(manifest), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "targetNamspace" in proc.stderr


@pytest.fixture
def jetson_node(control_plane: ControlPlane, tmp_path: Path) -> Iterator[str]:
    """A Ready Node with no edgeloom labels, labelled by label-node.sh from a fake Orin Nano."""
    register_nodes(control_plane, [FakeNode(NODE, {}, {"cpu": "6", "memory": "8Gi"})])
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(
        b"NVIDIA Jetson Orin Nano Developer Kit\0"
    )
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:        7802304 kB\n")
    env = {
        **os.environ,
        "KUBECTL": kubectl_binary(),
        "KUBECONFIG": str(control_plane.kubeconfig),
    }
    proc = subprocess.run(
        [str(EDGE / "label-node.sh"), "--root", str(tmp_path), "--node", NODE],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    yield NODE
    control_plane.kubectl("delete", "node", NODE, "--wait=false", check=False)


def worker_pod(name: str, tolerate: bool) -> dict[str, Any]:
    """A pod placed like the operator's edge workers (nodeSelector, toleration)."""
    spec: dict[str, Any] = {
        "nodeSelector": Placement("edge", device_profile="jetson-orin-nano").node_selector(),
        "containers": [{"name": "worker", "image": "edgeloom-services:test"}],
    }
    if tolerate:
        spec["tolerations"] = [
            {"key": NODE_TIER_LABEL, "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_label_node_makes_a_node_the_edge_workers_schedule_on(
    control_plane: ControlPlane, jetson_node: str, namespace: str
) -> None:
    node = control_plane.kubectl_json("get", "node", jetson_node)
    assert node["metadata"]["labels"][NODE_TIER_LABEL] == "edge"
    assert node["metadata"]["labels"][DEVICE_PROFILE_LABEL] == "jetson-orin-nano"
    taints = {(t["key"], t.get("value"), t["effect"]) for t in node["spec"]["taints"]}
    assert (NODE_TIER_LABEL, "edge", "NoSchedule") in taints

    control_plane.apply(
        worker_pod("tolerating", True), worker_pod("intolerant", False), namespace=namespace
    )

    def pod(name: str) -> dict[str, Any]:
        return control_plane.kubectl_json("get", "pod", name, "-n", namespace)

    wait_for(lambda: pod("tolerating")["spec"].get("nodeName") == jetson_node, 60, "binding")

    def unschedulable() -> bool:
        conditions = pod("intolerant")["status"].get("conditions", [])
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions
        )

    wait_for(unschedulable, 60, "the intolerant pod refused")
    assert "untolerated taint" in str(pod("intolerant")["status"]["conditions"])
    control_plane.kubectl(
        "delete", "pod", "--all", "-n", namespace, "--force", "--grace-period=0", check=False
    )
