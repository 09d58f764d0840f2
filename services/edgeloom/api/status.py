"""The status shape every kind shares: observedGeneration, phase, conditions, progress."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeloom.api.base import ApiModel


class Phase(StrEnum):
    """Short summary of where a resource is; conditions carry the detail."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DEGRADED = "Degraded"


class Condition(ApiModel):
    """A Kubernetes-style condition (the shape of metav1.Condition)."""

    type: str = Field(
        max_length=316, description="Condition type in CamelCase, e.g. Ready or Progressing."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
        description="One CamelCase word explaining the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: datetime = Field(
        description="When status last changed (RFC 3339); unchanged when only reason/message move."
    )
    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation this condition was computed from."
    )


def utcnow() -> datetime:
    """Current time, UTC, second precision (what Kubernetes stores)."""
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    conditions: list[Condition],
    type: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str = "",
    observed_generation: int = 0,
    now: datetime | None = None,
) -> list[Condition]:
    """Return a new list with condition ``type`` set.

    ``lastTransitionTime`` only moves when ``status`` changes, so re-reconciling an unchanged
    resource produces an identical status. The input list is not modified.
    """
    now = now or utcnow()
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type:
            out.append(cond)
            continue
        found = True
        moved = cond.status != status
        out.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now if moved else cond.last_transition_time,
                observed_generation=observed_generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=observed_generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type: str) -> Condition | None:
    """The condition of ``type``, or None."""
    return next((c for c in conditions if c.type == type), None)


METRIC_DIGITS = 4
"""Significant digits of ``progress.metricValue``: a printer column cannot format a number, so
the value is stored as it reads (``0.9205``, not ``0.9204514026641846``); the exact value is in
the job's result and its metrics."""


class Progress(ApiModel):
    """Where a long job stands; every field optional so each kind fills what it has.

    ``summary`` is derived (``<round>/<total>``, for the Progress printer column) and
    ``metricValue`` is rounded to :data:`METRIC_DIGITS` significant digits, whoever sets them.
    """

    round: int | None = Field(default=None, ge=0, description="Rounds (or steps) completed.")
    total_rounds: int | None = Field(default=None, ge=0, description="Rounds planned at most.")
    summary: str | None = Field(
        default=None,
        max_length=64,
        description="round/totalRounds, e.g. 5/50 (written from the two; what the Progress "
        "column shows).",
    )
    stage: str | None = Field(default=None, description="Current stage for multi-stage jobs.")
    participants_ready: int | None = Field(
        default=None, ge=0, description="Participants that reported in the last round."
    )
    participants_total: int | None = Field(
        default=None, ge=0, description="Participants the job was configured with."
    )
    participants_dropped: int | None = Field(
        default=None, ge=0, description="Participants dropped in the last round."
    )
    metric_name: str | None = Field(default=None, description="Name of the headline metric.")
    metric_value: float | None = Field(
        default=None,
        description=f"Current headline metric, to {METRIC_DIGITS} significant digits.",
    )
    virtual_time_seconds: float | None = Field(
        default=None, ge=0, description="Emulated device time spent so far (virtual clock)."
    )
    wall_time_seconds: float | None = Field(
        default=None, ge=0, description="Real time since the job started."
    )
    bytes_total: int | None = Field(default=None, ge=0, description="Bytes moved so far.")
    eta_seconds: float | None = Field(
        default=None, ge=0, description="Estimated wall seconds until the job finishes."
    )
    last_checkpoint: str | None = Field(
        default=None, description="Reference of the last checkpoint (object-store key)."
    )

    @field_validator("metric_value")
    @classmethod
    def _rounded(cls, value: float | None) -> float | None:
        return None if value is None else float(f"{value:.{METRIC_DIGITS}g}")

    @model_validator(mode="after")
    def _summarized(self) -> Progress:
        summary = None if self.round is None else str(self.round)
        if self.total_rounds is not None:
            summary = f"{self.round or 0}/{self.total_rounds}"
        if self.summary != summary:  # assigning validates again, and then finds it equal
            self.summary = summary
        return self


class Status(ApiModel):
    """Status every kind carries; a kind may subclass it to add typed result fields."""

    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation this status describes."
    )
    phase: Phase = Field(default=Phase.PENDING, description="Short summary of the state.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="Detailed state in Kubernetes condition form.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    progress: Progress = Field(default_factory=Progress, description="How far the job is.")


READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
"""The condition types GitOps tools read (kstatus: ``sigs.k8s.io/cli-utils/pkg/kstatus``)."""
SUMMARY_CONDITIONS = (READY, RECONCILING, STALLED)


def set_summary_conditions(
    conditions: list[Condition],
    phase: Phase,
    ready: bool,
    reason: str,
    message: str = "",
    observed_generation: int = 0,
    now: datetime | None = None,
) -> list[Condition]:
    """Set ``Ready``, ``Reconciling`` and ``Stalled`` together, the kstatus way.

    ``Ready`` is ``ready`` (a job: finished with a result; a service: available).
    ``Stalled=True`` exactly when the resource has Failed and will not recover;
    ``Reconciling=True`` while work is still in progress (neither ready nor failed). Flux
    (``wait: true``), kpt and Argo CD then read a failed resource as Failed, not InProgress
    forever. ``reason``/``message`` go on the condition that is True (on ``Ready`` too).
    """
    stalled = phase == Phase.FAILED
    reconciling = not ready and not stalled
    idle_reason = "Succeeded" if ready else ("Failed" if stalled else "InProgress")
    out = set_condition(
        conditions,
        READY,
        "True" if ready else "False",
        reason,
        message,
        observed_generation,
        now,
    )
    for type, active in ((RECONCILING, reconciling), (STALLED, stalled)):
        out = set_condition(
            out,
            type,
            "True" if active else "False",
            reason if active else idle_reason,
            message if active else "",
            observed_generation,
            now,
        )
    return out
