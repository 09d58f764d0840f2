"""Pure builders of the children every kind shares: labels, owner reference, the resource's
ConfigMap and NATS Secret, one hardened pod template per role, and around it a batch/v1 Job
(job kinds: one per role or worker group) or an apps/v1 Deployment with its v1 Service
(service kinds).

Nothing here talks to the API server; each kind's plugin composes these into the full list of
children, and golden files pin the result.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from edgeloom.api import podenv
from edgeloom.api.artifacts import FolderOutput
from edgeloom.api.registry import KindInfo
from edgeloom_operators.config import OperatorConfig

MANAGER = "edgeloom-operator"
"""Field manager of every server-side apply, and the managed-by label value."""
RESOURCE_DIR = "/etc/edgeloom"
RESOURCE_FILE = f"{RESOURCE_DIR}/resource.yaml"
WORK_DIR = "/work"
"""Every role pod's writable work folder (an emptyDir; the root filesystem is read-only): its
working directory and ``edgeloom serve``'s run dir, where default outputs go."""
TERMINATION_LOG = "/dev/termination-log"
NATS_DIR = "/var/run/edgeloom/nats"
"""Where a role pod finds its NATS credentials and the CA (its items of the job's Secret)."""
CA_KEY = "ca.crt"
NODE_TIER_LABEL = "edgeloom.io/tier"
DEVICE_PROFILE_LABEL = "edgeloom.io/device-profile"
RUN_LABEL = "edgeloom.io/run"
"""On every role pod: the resource's uid, which tells two runs of one name apart."""
GROUP_LABEL = "edgeloom.io/group"
"""Which of a role's Deployments (a device group) a pod belongs to."""
GPU_RESOURCE = "nvidia.com/gpu"
METRICS_PORT = 9400
"""Port of every role pod's ``/metrics``, served on the pod IP and announced by the
``prometheus.io/*`` annotations."""
MAX_NAME = 63
SERVE_COMMAND = ("edgeloom", "serve")
"""The role pods' entrypoint: runs the role named by EDGELOOM_ROLE of the mounted resource."""


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


def _metadata(
    body: dict[str, Any], info: KindInfo, name: str, role: str | None = None
) -> dict[str, Any]:
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


def nats_secret(
    body: dict[str, Any], info: KindInfo, config: OperatorConfig, creds: Mapping[str, str]
) -> dict[str, Any]:
    """The job's NATS connection: the URL, the CA (``ca.crt``) and ``creds``, one
    ``<role>.creds`` per role (:mod:`edgeloom_operators.credentials`). Written by the shared
    reconcile loop, not with the other children: credentials are minted, not rendered."""
    data = {"url": config.nats_url, **creds}
    if config.nats_ca is not None:
        data[CA_KEY] = config.nats_ca
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
        out: dict[str, str] = {NODE_TIER_LABEL: self.tier}
        if self.device_profile:
            out[DEVICE_PROFILE_LABEL] = self.device_profile
        return out


@dataclass(frozen=True)
class ClaimMount:
    """A PersistentVolumeClaim of the resource's namespace mounted in a role's pods."""

    claim: str
    mount_path: str
    read_only: bool = False


def output_claims(*outputs: FolderOutput) -> tuple[ClaimMount, ...]:
    """The claims to mount, read-write at their paths, for the outputs that name one: what a
    kind whose spec has :class:`FolderOutput` fields passes to its writing role."""
    return tuple(
        ClaimMount(out.volume_claim, out.path)
        for out in outputs
        if out.volume_claim is not None and out.path is not None
    )


@dataclass(frozen=True)
class RoleJob:
    """One batch/v1 Job running ``replicas`` pods of a role, indices ``offset`` onwards;
    ``claims`` are mounted in its pods."""

    role: str
    placement: Placement
    replicas: int = 1
    offset: int = 0
    group: str | None = None
    essential: bool = True
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})
    claims: tuple[ClaimMount, ...] = ()


@dataclass(frozen=True)
class ServicePort:
    """A port a service role listens on, exposed by its Service (besides ``metrics``)."""

    name: str
    port: int
    protocol: Literal["TCP", "UDP"] = "TCP"


@dataclass(frozen=True)
class RoleDeployment:
    """One apps/v1 Deployment running ``replicas`` long-lived pods of a role, and the v1
    Service in front of them.

    ``min_ready_seconds``: how long a new pod must stay ready before it counts as available
    (a pod that crashes right after starting does not make the service Available).
    ``command``: the entrypoint, ``edgeloom serve`` unless a kind ships its own.
    ``claims``: PersistentVolumeClaims mounted in its pods.
    """

    role: str
    placement: Placement
    replicas: int = 1
    ports: tuple[ServicePort, ...] = ()
    min_ready_seconds: int = 0
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})
    command: tuple[str, ...] = SERVE_COMMAND
    claims: tuple[ClaimMount, ...] = ()
    group: str | None = None
    """One of several Deployments of the role (a device group): named after it, its pods
    labelled with it, and given ``index`` (the group's first replica index)."""
    index: int = 0
    ready_path: str | None = None
    """An HTTP path on the first of ``ports`` that answers 200 once the pod serves: its
    readiness probe (without one a pod is ready once it runs)."""


def _env_from_secret(env: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": env, "valueFrom": {"secretKeyRef": ref}}


def creds_key(role: str) -> str:
    """The key of a role's NATS credentials in its job's Secret (and its file in the pod)."""
    return f"{role}.creds"


def _nats_files(
    role: str, config: OperatorConfig
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The env naming a role's NATS files, and the items of the job's Secret that hold them:
    only this role's credentials (with auth) and the CA (with TLS)."""
    env, items = [], []
    if config.authority_secret is not None:
        items.append({"key": creds_key(role), "path": creds_key(role)})
        env.append({"name": podenv.NATS_CREDS, "value": f"{NATS_DIR}/{creds_key(role)}"})
    if config.nats_ca is not None:
        items.append({"key": CA_KEY, "path": CA_KEY})
        env.append({"name": podenv.NATS_CA_FILE, "value": f"{NATS_DIR}/{CA_KEY}"})
    return env, items


def role_pod_template(
    body: dict[str, Any],
    info: KindInfo,
    role: str,
    placement: Placement,
    requests: dict[str, str],
    config: OperatorConfig,
    restart_policy: Literal["Never", "Always"],
    extra_env: list[dict[str, Any]] | None = None,
    ports: tuple[ServicePort, ...] = (),
    command: tuple[str, ...] = SERVE_COMMAND,
    claims: tuple[ClaimMount, ...] = (),
    group: str | None = None,
    ready_path: str | None = None,
) -> dict[str, Any]:
    """The pod template of one role: non-root, read-only root filesystem, no service-account
    token, every capability dropped, the RuntimeDefault seccomp profile, the resource mounted
    at /etc/edgeloom, NATS from the resource's Secret, ``/metrics`` on the pod IP (announced
    by the ``prometheus.io/*`` annotations) and the tier's nodeSelector and tolerations.

    The role writes only to emptyDirs (/tmp, and /work: its working directory and run dir,
    EDGELOOM_WORK_DIR) and to ``claims``, mounted where the spec says; fsGroup makes those
    writable by the pod's user."""
    name = body["metadata"]["name"]
    secret = child_name(name, "nats")
    nats_env, nats_files = _nats_files(role, config)
    env = [
        {"name": podenv.RESOURCE, "value": RESOURCE_FILE},
        {"name": podenv.ROLE, "value": role},
        {"name": podenv.TERMINATION_MESSAGE_PATH, "value": TERMINATION_LOG},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": podenv.WORK_DIR, "value": WORK_DIR},
        _env_from_secret(podenv.NATS_URL, secret, "url"),
        *nats_env,
        {"name": podenv.METRICS_PORT, "value": str(METRICS_PORT)},
        {"name": podenv.METRICS_ADDR, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": podenv.METRICS_LINGER_SECONDS, "value": f"{config.job_metrics_linger_s:g}"},
        *(
            [{"name": podenv.HTTP_ADDR, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
            if ports
            else []
        ),
        *(extra_env or []),
    ]
    resources: dict[str, Any] = {"requests": dict(requests)}
    if placement.gpus:
        resources["limits"] = {GPU_RESOURCE: str(placement.gpus)}
    container = {
        "name": role,
        "image": config.services_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(command),
        "workingDir": WORK_DIR,
        "env": env,
        "ports": [
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            *({"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in ports),
        ],
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
            {"name": "work", "mountPath": WORK_DIR},
            *([{"name": "nats", "mountPath": NATS_DIR, "readOnly": True}] if nats_files else []),
            *(
                {"name": f"claim-{i}", "mountPath": c.mount_path, "readOnly": c.read_only}
                for i, c in enumerate(claims)
            ),
        ],
    }
    if ready_path is not None:
        container["readinessProbe"] = {
            "httpGet": {"path": ready_path, "port": ports[0].name},
            "periodSeconds": 5,
            "failureThreshold": 2,
        }
    pod_spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "nodeSelector": placement.node_selector(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "resource",
                "configMap": {"name": child_name(name, "resource")},
            },
            {"name": "tmp", "emptyDir": {}},
            {"name": "work", "emptyDir": {}},
            *(
                [{"name": "nats", "secret": {"secretName": secret, "items": nats_files}}]
                if nats_files
                else []
            ),
            *(
                {"name": f"claim-{i}", "persistentVolumeClaim": {"claimName": c.claim}}
                for i, c in enumerate(claims)
            ),
        ],
    }
    if placement.tier == "edge":  # k3s-edge taints edge nodes so only edge roles land there
        pod_spec["tolerations"] = [
            {"key": NODE_TIER_LABEL, "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
        ]
    return {
        "metadata": {
            # the run: a namesake re-created later is another uid (scrape target edgeloom_run)
            "labels": {
                **pod_selector(info, name, role, group),
                **labels(info, name, role),
                RUN_LABEL: body["metadata"]["uid"],
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }


def pod_failure_policy(container: str) -> dict[str, Any]:
    """A role Job's ``podFailurePolicy``, the batch/v1 way: an exit code the role ends with
    when no retry can help (:data:`~edgeloom.api.podenv.DETERMINISTIC_EXIT_CODES`: an
    invalid resource, ``JobFailed``) fails the Job at once; a pod disrupted by a node drain,
    a preemption or a lost node is replaced without counting against ``backoffLimit``; any
    other failure (a crash, exit 1, an OOM kill) is retried up to ``backoffLimit``."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": list(podenv.DETERMINISTIC_EXIT_CODES),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def role_job(
    body: dict[str, Any], info: KindInfo, job: RoleJob, config: OperatorConfig
) -> dict[str, Any]:
    """The Job of one role (or worker group), its pods from :func:`role_pod_template`.

    Essential roles get ``backoffLimit`` 2 (a crash-looping coordinator fails the resource);
    groups of replicas get one retry per replica, and a deleted pod is replaced so a killed
    worker rejoins. Its :func:`pod_failure_policy` fails it on the first deterministic
    failure and does not count disruptions.
    """
    name = body["metadata"]["name"]
    job_name = child_name(name, job.role, *([job.group] if job.group else []))
    extra_env = []
    if job.replicas > 1 or job.offset:
        extra_env.append({"name": podenv.INDEX_OFFSET, "value": str(job.offset)})
    template = role_pod_template(
        body,
        info,
        job.role,
        job.placement,
        job.requests,
        config,
        "Never",
        extra_env,
        claims=job.claims,
    )
    job_spec: dict[str, Any] = {
        "backoffLimit": 2 if job.essential else 2 * job.replicas,
        "podFailurePolicy": pod_failure_policy(job.role),
        "template": template,
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


def pod_selector(info: KindInfo, name: str, role: str, group: str | None = None) -> dict[str, str]:
    """The labels that select one role's pods of one resource, or of one group of them (a
    Deployment's and a Service's selector; never changes, since a Deployment's selector is
    immutable)."""
    out = {"edgeloom.io/kind": info.singular, "edgeloom.io/job": name, "edgeloom.io/role": role}
    if group is not None:
        out[GROUP_LABEL] = group
    return out


def role_deployment(
    body: dict[str, Any], info: KindInfo, role: RoleDeployment, config: OperatorConfig
) -> dict[str, Any]:
    """The Deployment of one service role, its pods from :func:`role_pod_template`; a
    deleted or crashed pod is restarted (restartPolicy Always) or replaced by its ReplicaSet."""
    name = body["metadata"]["name"]
    index = [{"name": podenv.INDEX, "value": str(role.index)}] if role.group else []
    template = role_pod_template(
        body,
        info,
        role.role,
        role.placement,
        role.requests,
        config,
        "Always",
        index,
        ports=role.ports,
        command=role.command,
        claims=role.claims,
        group=role.group,
        ready_path=role.ready_path,
    )
    spec: dict[str, Any] = {
        "replicas": role.replicas,
        "revisionHistoryLimit": 2,
        "selector": {"matchLabels": pod_selector(info, name, role.role, role.group)},
        "template": template,
    }
    if role.min_ready_seconds:
        spec["minReadySeconds"] = role.min_ready_seconds
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body, info, deployment_name(name, role), role.role),
        "spec": spec,
    }


def deployment_name(name: str, role: RoleDeployment) -> str:
    """``<name>-<role>``, or ``<name>-<role>-<group>``: the role's Deployment and Service."""
    return child_name(name, role.role, *([role.group] if role.group else []))


def role_service(body: dict[str, Any], info: KindInfo, role: RoleDeployment) -> dict[str, Any]:
    """The ClusterIP Service in front of a service role's pods: its ports and ``metrics``."""
    name = body["metadata"]["name"]
    ports = [
        {"name": p.name, "port": p.port, "targetPort": p.name, "protocol": p.protocol}
        for p in role.ports
    ]
    ports.append(
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, info, deployment_name(name, role), role.role),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector(info, name, role.role, role.group),
            "ports": ports,
        },
    }


def children(
    body: dict[str, Any], info: KindInfo, jobs: list[RoleJob], config: OperatorConfig
) -> list[dict[str, Any]]:
    """A job kind's children: the ConfigMap first (the pods mount it, and the NATS Secret
    the reconcile loop writes before any child), then the role Jobs."""
    return [
        resource_config_map(body, info),
        *(role_job(body, info, job, config) for job in jobs),
    ]


def service_children(
    body: dict[str, Any], info: KindInfo, roles: list[RoleDeployment], config: OperatorConfig
) -> list[dict[str, Any]]:
    """A service kind's children: the ConfigMap first, then each role's Deployment and
    Service."""
    out = [resource_config_map(body, info)]
    for role in roles:
        out += [role_deployment(body, info, role, config), role_service(body, info, role)]
    return out
