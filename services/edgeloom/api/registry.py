"""One registration per kind, read by the CRD generator, the local runner and the operators.

Nothing here imports torch: the role implementations are named by module path and imported
only by the process that runs them (``edgeloom serve``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeloom.api.resource import DNS1035_LABEL, DNS1123_LABEL, MAX_NAME_LENGTH
from edgeloom.api.status import METRIC_DIGITS, Status


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


Shape = Literal["job", "service"]
"""``job``: runs to Succeeded or Failed, its spec fixed once created; ``service``: runs until
deleted, and a changed spec rolls out (like a Deployment's)."""


@dataclass(frozen=True)
class HeadlineMetric:
    """The one metric a kind's coordinator reports in ``status.progress.metricValue``."""

    name: str
    """What it is called, and so its printer column: ``accuracy``, or ``quality`` where
    ``status.progress.metricName`` says which one a run measures (perplexity...)."""
    description: str
    """What it measures, for the printer column's description."""

    @property
    def column(self) -> str:
        """The printer column's name: ``accuracy`` -> ``Accuracy`` (kubectl shows ACCURACY)."""
        return self.name.replace("_", "-").capitalize()


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
    shape: Shape
    """Job or service: a job's spec is immutable once created (an admission rule says so)."""
    metric: HeadlineMetric | None = None
    """The headline metric, shown in a column of its own name; a job must have one."""
    extra_columns: tuple[PrinterColumn, ...] = field(default=())
    """The kind's own printer columns, shown after Ready and Reason (see
    :attr:`printer_columns`)."""
    cel_rules: tuple[tuple[str, str], ...] = field(default=())
    """(rule, message) pairs validated at admission on ``spec`` (x-kubernetes-validations)."""
    scale: ScaleSubresource | None = None
    """The scale subresource, for kinds that run a number of replicas (services)."""

    def __post_init__(self) -> None:
        if self.shape == "job" and self.metric is None:
            raise ValueError(f"{self.kind} is a job: name its headline metric (metric=...)")

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def role(self, name: str) -> RoleInfo:
        for role in self.roles:
            if role.name == name:
                return role
        known = ", ".join(r.name for r in self.roles)
        raise KeyError(f"{self.kind} has no role {name!r} (roles: {known})")

    @property
    def printer_columns(self) -> tuple[PrinterColumn, ...]:
        """Every kind's columns: Phase, Ready, Reason, its own, then a job's Progress
        (``<round>/<total>``), the headline metric's column (rounded), and Age."""
        metric = () if self.metric is None else (_metric_column(self.metric),)
        progress = (PROGRESS_COLUMN,) if self.shape == "job" else ()
        return (
            PHASE_COLUMN,
            READY_COLUMN,
            REASON_COLUMN,
            *self.extra_columns,
            *progress,
            *metric,
            AGE_COLUMN,
        )

    @property
    def name_rules(self) -> tuple[tuple[str, str], ...]:
        """(rule, message) pairs on ``self.metadata.name``, validated at admission on the
        resource's root: the names :class:`edgeloom.api.resource.Metadata` takes (a service's
        also name its Service, so they follow DNS-1035)."""
        if self.shape == "service":
            pattern, form = DNS1035_LABEL, "start with a lowercase letter"
            why = "it names the kind's Service (DNS-1035) and its pods' labels"
        else:
            pattern, form = DNS1123_LABEL, "start with a lowercase letter or digit"
            why = "it is a label value of every child and a token of the job's NATS subjects"
        return (
            (
                f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                f"metadata.name must be at most {MAX_NAME_LENGTH} characters: it is the "
                "edgeloom.io/job label value of every child",
            ),
            (
                f"self.metadata.name.matches('{pattern}')",
                f"metadata.name must consist of lowercase letters, digits and '-', {form} and "
                f"end with a letter or digit: {why}",
            ),
        )

    @property
    def spec_transition_rules(self) -> tuple[tuple[str, str], ...]:
        """(rule, message) pairs on ``spec`` comparing it with the stored one (``oldSelf``):
        a job's spec is immutable, as a Job's pod template is; a service's rolls out."""
        if self.shape != "job":
            return ()
        return (
            (
                "self == oldSelf",
                f"spec is immutable: delete and re-create the {self.kind} to run a new spec",
            ),
        )


PHASE_COLUMN = PrinterColumn(
    "Phase", ".status.phase", description="Summary of the resource's state."
)
READY_COLUMN = PrinterColumn(
    "Ready",
    '.status.conditions[?(@.type=="Ready")].status',
    description="The Ready condition: True once a job has finished with a result, or while a "
    "service is available.",
)
REASON_COLUMN = PrinterColumn(
    "Reason",
    '.status.conditions[?(@.type=="Ready")].reason',
    description="Why Ready is what it is (one CamelCase word; describe the resource for more).",
)
PROGRESS_COLUMN = PrinterColumn(
    "Progress",
    ".status.progress.summary",
    description="Rounds or steps completed out of those planned (<round>/<total>).",
)
AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


def _metric_column(metric: HeadlineMetric) -> PrinterColumn:
    return PrinterColumn(
        metric.column,
        ".status.progress.metricValue",
        type="number",
        description=f"{metric.description} ({METRIC_DIGITS} significant digits).",
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
