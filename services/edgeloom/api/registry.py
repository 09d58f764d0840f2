"""One registration per kind, read by the CRD generator, the local runner and the operators.

Nothing here imports torch: the role implementations are named by module path and imported
only by the process that runs them (``edgeloom serve``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeloom.api.status import Status


@dataclass(frozen=True)
class RoleInfo:
    """One role of a kind: which tier it runs on and how many replicas a spec asks for."""

    name: str
    tier: Literal["cloud", "edge"]
    replicas: Callable[[Any], int]
    """Number of processes/pods of this role for a given spec."""
    essential: bool = True
    """When False, the job itself tolerates losing a replica (its participation policy
    decides), so runners log the loss instead of failing the job."""
    publishes: tuple[str, ...] = ()
    subscribes: tuple[str, ...] = ()
    """Channels of its job (``edgeloom.<ns>.<kind>.<name>.<channel>``, NATS wildcards
    allowed) this role may publish or subscribe to beyond what every coordinator or
    participant may (:func:`edgeloom.runtime.natsauth.role_permissions`)."""


@dataclass(frozen=True)
class PrinterColumn:
    """An additionalPrinterColumns entry of the CRD."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    """The CRD's ``scale`` subresource: ``kubectl scale`` and autoscalers write the spec's
    replica count and read the observed one (JSON paths into the resource)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = ".status.selector"
    """Where the pods' label selector (string form) is, for a HorizontalPodAutoscaler."""


@dataclass(frozen=True)
class KindInfo:
    """Everything the platform needs to know about one kind."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type
    status_model: type[Status]
    roles: tuple[RoleInfo, ...]
    app_module: str
    """Module defining ``ROLES: dict[str, RoleMain]`` for ``edgeloom serve``."""
    description: str
    printer_columns: tuple[PrinterColumn, ...] = field(default=())
    cel_rules: tuple[tuple[str, str], ...] = field(default=())
    """(rule, message) pairs validated at admission on ``spec`` (x-kubernetes-validations)."""
    scale: ScaleSubresource | None = None
    """The scale subresource, for kinds that run a number of replicas (services)."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def role(self, name: str) -> RoleInfo:
        for role in self.roles:
            if role.name == name:
                return role
        known = ", ".join(r.name for r in self.roles)
        raise KeyError(f"{self.kind} has no role {name!r} (roles: {known})")


DEFAULT_PRINTER_COLUMNS = (
    PrinterColumn("Phase", ".status.phase", description="Summary of the resource's state."),
    PrinterColumn(
        "Progress",
        ".status.progress.round",
        type="integer",
        description="Rounds or steps completed.",
    ),
    PrinterColumn(
        "Metric",
        ".status.progress.metricValue",
        type="number",
        description="Current value of the headline metric.",
    ),
    PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
)

_KINDS: dict[str, KindInfo] = {}


def register_kind(info: KindInfo) -> KindInfo:
    """Register a kind; registering the same kind twice is a programming error."""
    if info.kind in _KINDS:
        raise ValueError(f"kind {info.kind} registered twice")
    _KINDS[info.kind] = info
    return info


def kinds() -> dict[str, KindInfo]:
    """All registered kinds, by kind name."""
    import edgeloom.api.kinds  # noqa: F401  (registers every kind)

    return dict(_KINDS)


def kind_info(kind: str) -> KindInfo:
    """The registration of ``kind``; KeyError naming the known kinds otherwise."""
    known = kinds()
    if kind not in known:
        raise KeyError(f"unknown kind {kind!r} (known: {', '.join(sorted(known))})")
    return known[kind]
