"""Pure builders of the children every kind shares: labels, owner reference, the job's
ConfigMap and NATS Secret, and one batch/v1 Job per role (or per worker group).

Nothing here talks to the API server; each kind's ``render`` module composes these into the
full list of children, and golden files pin the result.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from edgeloom.api.registry import KindInfo
from edgeloom_operators.config import OperatorConfig

API_VERSION = "edgeloom.io/v1alpha1"
MANAGER = "edgeloom-operator"
"""Field manager of every server-side apply, and the managed-by label value."""
RESOURCE_DIR = "/etc/edgeloom"
RESOURCE_FILE = f"{RESOURCE_DIR}/resource.yaml"
TERMINATION_LOG = "/dev/termination-log"
NODE_TIER_LABEL = "edgeloom.io/tier"
DEVICE_PROFILE_LABEL = "edgeloom.io/device-profile"
GPU_RESOURCE = "nvidia.com/gpu"
METRICS_PORT = 9400
"""Port of every role pod's ``/metrics``, served on the pod IP and announced by the
``prometheus.io/*`` annotations."""
MAX_NAME = 63
INDEX_OFFSET_ENV = "EDGELOOM_INDEX_OFFSET"
"""Where a worker group's indices start (``edgeloom serve`` adds its completion index)."""


def child_name(name: str, *parts: str) -> str:
    """``<name>-<part>...``, shortened with a hash suffix to fit a label value (63 chars)."""
    full = "-".join((name, *parts))
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: MAX_NAME - 9].rstrip('-')}-{digest}"


def labels(info: KindInfo, name: str, role: str | None = None) -> dict[str, str]:
    """Labels on every child; ``edgeloom.io/kind`` + ``edgeloom.io/job`` select a job's children."""
    out = {
        "app.kubernetes.io/name": "edgeloom",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGER,
        "edgeloom.io/kind": info.singular,
        "edgeloom.io/job": name,
    }
    if role is not None:
        out["app.kubernetes.io/component"] = role
        out["edgeloom.io/role"] = role
    return out


def job_selector(info: KindInfo, name: str) -> str:
    """Label selector of all children of one resource."""
    return f"edgeloom.io/kind={info.singular},edgeloom.io/job={name}"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """Controller owner reference, so deleting the resource deletes its children."""
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(body: dict[str, Any], info: KindInfo, name: str, role: str | None = None) -> dict:
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": labels(info, body["metadata"]["name"], role),
        "ownerReferences": [owner_reference(body)],
    }


def resource_config_map(body: dict[str, Any], info: KindInfo) -> dict[str, Any]:
    """The resource as the role pods read it: apiVersion, kind, metadata (with uid and
    generation, which name the run) and spec; never status."""
    meta = body["metadata"]
    resource = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "generation": meta.get("generation", 1),
        },
        "spec": body.get("spec") or {},
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body, info, child_name(meta["name"], "resource")),
        "data": {"resource.yaml": yaml.safe_dump(resource, sort_keys=True)},
    }


def nats_secret(body: dict[str, Any], info: KindInfo, config: OperatorConfig) -> dict[str, Any]:
    """The job's NATS connection (url, user, password) in a Secret its pods read as env."""
    data = {"url": config.nats_url}
    if config.nats_user:
        data["user"] = config.nats_user
        data["password"] = config.nats_password or ""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(body, info, child_name(body["metadata"]["name"], "nats")),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@dataclass(frozen=True)
class Placement:
    """Where a role's pods go: tier, device profile label, GPUs."""

    tier: Literal["cloud", "edge"]
    device_profile: str | None = None
    gpus: int = 0

    def node_selector(self) -> dict[str, str]:
        """The pod's nodeSelector: the tier, and the device profile when one is asked for."""
        out = {NODE_TIER_LABEL: self.tier}
        if self.device_profile:
            out[DEVICE_PROFILE_LABEL] = self.device_profile
        return out


@dataclass(frozen=True)
class RoleJob:
    """One batch/v1 Job running ``replicas`` pods of a role, indices ``offset`` onwards."""

    role: str
    placement: Placement
    replicas: int = 1
    offset: int = 0
    group: str | None = None
    essential: bool = True
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})


def _env_from_secret(env: str, secret: str, key: str, optional: bool = False) -> dict:
    ref = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": env, "valueFrom": {"secretKeyRef": ref}}


def role_job(
    body: dict[str, Any], info: KindInfo, job: RoleJob, config: OperatorConfig
) -> dict[str, Any]:
    """The Job of one role (or worker group): non-root, read-only root filesystem, no
    service-account token, the resource mounted at /etc/edgeloom, NATS from the job's Secret.

    Essential roles get ``backoffLimit`` 2 (a crash-looping coordinator fails the resource);
    groups of replicas get one retry per replica, and a deleted pod is replaced so a killed
    worker rejoins.
    """
    name = body["metadata"]["name"]
    job_name = child_name(name, job.role, *([job.group] if job.group else []))
    secret = child_name(name, "nats")
    env = [
        {"name": "EDGELOOM_RESOURCE", "value": RESOURCE_FILE},
        {"name": "EDGELOOM_ROLE", "value": job.role},
        {"name": "EDGELOOM_TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        _env_from_secret("EDGELOOM_NATS_URL", secret, "url"),
        _env_from_secret("EDGELOOM_NATS_USER", secret, "user", optional=True),
        _env_from_secret("EDGELOOM_NATS_PASSWORD", secret, "password", optional=True),
        {"name": "EDGELOOM_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "EDGELOOM_METRICS_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "EDGELOOM_METRICS_LINGER_SECONDS", "value": f"{config.job_metrics_linger_s:g}"},
    ]
    if job.replicas > 1 or job.offset:
        env.append({"name": INDEX_OFFSET_ENV, "value": str(job.offset)})
    resources: dict[str, Any] = {"requests": dict(job.requests)}
    if job.placement.gpus:
        resources["limits"] = {GPU_RESOURCE: str(job.placement.gpus)}
    container = {
        "name": job.role,
        "image": config.services_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["edgeloom", "serve"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "resource", "mountPath": RESOURCE_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "nodeSelector": job.placement.node_selector(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "resource",
                "configMap": {"name": child_name(name, "resource")},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if job.placement.tier == "edge":  # k3s-edge taints edge nodes so only edge roles land there
        pod_spec["tolerations"] = [
            {"key": NODE_TIER_LABEL, "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
        ]
    job_spec: dict[str, Any] = {
        "backoffLimit": 2 if job.essential else 2 * job.replicas,
        "template": {
            "metadata": {
                "labels": labels(info, name, job.role),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if job.replicas > 1:
        job_spec |= {
            "completions": job.replicas,
            "parallelism": job.replicas,
            "completionMode": "Indexed",
        }
    metadata = _metadata(body, info, job_name, job.role)
    metadata["annotations"] = {"edgeloom.io/essential": str(job.essential).lower()}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def children(
    body: dict[str, Any], info: KindInfo, jobs: list[RoleJob], config: OperatorConfig
) -> list[dict[str, Any]]:
    """ConfigMap and Secret first (the pods mount them), then the role Jobs."""
    return [
        resource_config_map(body, info),
        nats_secret(body, info, config),
        *(role_job(body, info, job, config) for job in jobs),
    ]
