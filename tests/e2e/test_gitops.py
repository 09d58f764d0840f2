"""GitOps on the real control plane: edgeloom resources read by Flux's and Argo CD's own rules.

The chart is installed by the real helm; PruneJobs are applied by the real kubectl and
reconciled by the installed operator. Each resource, as ``kubectl get -o json`` returns it, is
judged twice: by kstatus (``controlplane/kstatus`` over sigs.k8s.io/cli-utils, what Flux 2's
``wait: true`` and ``healthChecks`` run) and by the chart's Argo CD health check, read back
from an ``argocd-cm`` ConfigMap applied from the chart's file, in real Lua 5.1. A PruneJob
that cannot get a pod (its namespace's quota allows none) stays in progress, one whose model
does not exist fails, one that prunes MiniLM finishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.argocd import ARGOCD_HEALTH_FILE
from edgeloom.api.resource import GROUP
from edgeloom_testkit.controlplane import ControlPlane, wait_for
from edgeloom_testkit.gitops import argocd_health, kstatus
from edgeloom_testkit.node_agent import NodeAgent
from edgeloom_testkit.secure_nats import secure_nats

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "edgeloom-gitops"
ARGOCD = "argocd"
AGREE = {"InProgress": "Progressing", "Current": "Healthy", "Failed": "Degraded"}
"""Each kstatus verdict and the Argo CD health that must go with it."""

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane, node_agent: NodeAgent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with secure_nats(tmp_path_factory.mktemp("nats")) as nats:
        control_plane.install_edgeloom("gitops", SYSTEM, nats)
        yield "gitops"
        control_plane.helm("uninstall", "gitops", "-n", SYSTEM, "--wait", check=False)
        control_plane.kubectl("delete", "namespace", SYSTEM, "--wait=false", check=False)


@pytest.fixture(scope="module")
def health_checks(control_plane: ControlPlane) -> Iterator[dict[str, str]]:
    """The Lua scripts as Argo CD reads them: from its ``argocd-cm``, applied from the chart."""
    control_plane.kubectl("create", "namespace", ARGOCD)
    control_plane.kubectl("apply", "-n", ARGOCD, "-f", str(ROOT / ARGOCD_HEALTH_FILE))
    yield control_plane.kubectl_json("get", "configmap", "argocd-cm", "-n", ARGOCD)["data"]
    control_plane.kubectl("delete", "namespace", ARGOCD, "--wait=false", check=False)


def verdicts(
    plane: ControlPlane, scripts: dict[str, str], name: str, namespace: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The PruneJob as the API server returns it, kstatus' verdict and Argo CD's."""
    obj: dict[str, Any] = plane.kubectl_json("get", "prunejob", name, "-n", namespace)
    script = scripts[f"resource.customizations.health.{GROUP}_{obj['kind']}"]
    return obj, kstatus(obj, plane.bin_dir), argocd_health(script, obj)


def prunejob(name: str, **model: str) -> str:
    """The MiniLM example under ``name``, with e2e-sized samples and ``model`` if given."""
    obj = yaml.safe_load((ROOT / "examples" / "prunejob-minilm.yaml").read_text())
    obj["metadata"]["name"] = name
    obj["spec"]["calibration"]["samples"] = 32
    obj["spec"]["evaluation"]["samples"] = 64
    if model:
        obj["spec"]["model"] = model
    return yaml.safe_dump(obj)


def reported(plane: ControlPlane, name: str, namespace: str) -> bool:
    """Whether the operator has written the resource's status for its current generation."""
    obj = plane.kubectl_json("get", "prunejob", name, "-n", namespace)
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"]["generation"])


def test_a_prunejob_that_cannot_start_is_in_progress_to_flux_and_argocd(
    control_plane: ControlPlane, installed: str, health_checks: dict[str, str], namespace: str
) -> None:
    plane = control_plane
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}}
    plane.apply({**quota, "spec": {"hard": {"pods": "0"}}}, namespace=namespace)
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=prunejob("starved"))
    wait_for(lambda: reported(plane, "starved", namespace), 60, "the operator's first status")
    wait_for(
        lambda: plane.kubectl_json("get", "jobs", "-n", namespace)["items"],
        60,
        "the pruner's Job (whose pod the quota refuses)",
    )
    obj, flux, argo = verdicts(plane, health_checks, "starved", namespace)
    assert obj["status"]["phase"] == "Pending"
    assert flux["status"] == "InProgress", flux
    assert argo["status"] == "Progressing", argo
    assert argo["message"].startswith("Pending")


def test_a_prunejob_whose_model_is_missing_is_failed_to_flux_and_degraded_to_argocd(
    control_plane: ControlPlane, installed: str, health_checks: dict[str, str], namespace: str
) -> None:
    plane = control_plane
    missing = "/models/does-not-exist"
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=prunejob("lost", path=missing))

    def failed() -> tuple[dict[str, Any], dict[str, str], dict[str, str]] | None:
        seen = verdicts(plane, health_checks, "lost", namespace)
        return seen if (seen[0].get("status") or {}).get("phase") == "Failed" else None

    obj, flux, argo = wait_for(failed, 300, "the PruneJob to fail", 2.0)
    assert flux["status"] == "Failed", flux
    assert argo["status"] == "Degraded", argo
    stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
    assert flux["message"] == stalled["message"]  # kstatus reads the operator's Stalled
    assert argo["message"].endswith(stalled["message"])
    assert missing in stalled["message"]


def test_a_finished_prunejob_is_current_to_flux_and_healthy_to_argocd(
    control_plane: ControlPlane, installed: str, health_checks: dict[str, str], namespace: str
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=prunejob("pruned"))
    wait_for(lambda: reported(plane, "pruned", namespace), 60, "the operator's first status")
    pairs: list[tuple[str, str]] = []

    def finished() -> tuple[dict[str, Any], dict[str, str], dict[str, str]] | None:
        seen = verdicts(plane, health_checks, "pruned", namespace)
        pairs.append((seen[1]["status"], seen[2]["status"]))
        return seen if seen[0]["status"]["phase"] in ("Succeeded", "Failed") else None

    obj, flux, argo = wait_for(finished, 600, "the PruneJob to finish", 2.0)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert (flux["status"], argo["status"]) == ("Current", "Healthy")
    assert argo["message"].startswith("Succeeded")
    # on the way, the two tools never disagreed
    assert all(AGREE[flux_says] == argo_says for flux_says, argo_says in pairs), pairs
