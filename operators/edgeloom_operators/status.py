"""Pure status derivation: what a resource's ``.status`` should be, from its child Jobs and
the job's own latest report.

The job's report (a NATS status message, or the coordinator pod's termination message)
carries progress, conditions and typed results; the Jobs decide the terminal outcome when the
report cannot (a pod that crashed before reporting, a report lost while the operator was
down). ``Ready`` is True exactly when the resource has Succeeded, so ``kubectl wait
--for=condition=Ready`` and GitOps health checks mean "finished with a result".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from edgeloom.api.registry import KindInfo
from edgeloom.api.status import Phase, Status, get_condition, set_condition

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)
HEALTH = "WorkersHealthy"
"""Condition the worker-health loop owns (:mod:`edgeloom_operators.workers`)."""
Health = tuple[Literal["True", "False", "Unknown"], str, str]
"""(status, reason, message) of the WorkersHealthy condition."""


def _job_condition(job: dict[str, Any], type: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type and cond.get("status") == "True":
            return cond
    return None


def is_essential(job: dict[str, Any]) -> bool:
    """Whether a child Job runs a coordinating role (its failure fails the resource)."""
    annotations = job["metadata"].get("annotations") or {}
    return annotations.get("edgeloom.io/essential", "true") == "true"


def job_outcome(jobs: list[dict[str, Any]]) -> tuple[Phase | None, str, str]:
    """(phase the Jobs prove, reason, message): Failed when an essential Job failed,
    Succeeded when every essential Job completed, Running when a pod is active, else None."""
    essential = [j for j in jobs if is_essential(j)]
    for job in essential:
        failed = _job_condition(job, "Failed")
        if failed is not None:
            reason = failed.get("reason") or "JobFailed"
            detail = failed.get("message") or "the Job failed"
            return Phase.FAILED, reason, f"{job['metadata']['name']}: {detail}"
    if essential and all(_job_condition(j, "Complete") for j in essential):
        return Phase.SUCCEEDED, "Completed", "every coordinating pod finished successfully"
    if any((j.get("status") or {}).get("active") for j in jobs):
        return Phase.RUNNING, "Running", "pods are running"
    return None, "", ""


def derive_status(
    info: KindInfo,
    generation: int,
    current: dict[str, Any] | None,
    jobs: list[dict[str, Any]],
    report: dict[str, Any] | None = None,
    now: datetime | None = None,
    health: Health | None = None,
) -> dict[str, Any]:
    """The status to write: progress and results from the report (else the current status),
    with phase, ``Ready`` and observedGeneration settled by the rules of the module docstring.

    A terminal phase already written for this generation sticks (a late or retried pod's report
    cannot turn Succeeded back into Running); a status written for an older generation does not
    decide the phase of the new one. The operator owns ``Ready`` and ``WorkersHealthy``
    (``health``, else the one already written): their lastTransitionTime moves only when
    their status does.

    Raises
    ------
    pydantic.ValidationError
        When ``report`` does not fit the kind's status model.
    """
    kept = info.status_model.model_validate(current or {})
    same_generation = bool(current) and kept.observed_generation == generation
    previous = kept.phase if same_generation else None
    sticky = previous in TERMINAL
    if report is not None and not sticky:
        status: Status = info.status_model.model_validate(report)
        reported: Phase | None = status.phase
    else:
        status, reported = kept, None
    proven, reason, message = job_outcome(jobs)
    if sticky:
        phase = previous
    elif proven == Phase.FAILED:
        phase = Phase.FAILED
    elif proven == Phase.SUCCEEDED:
        phase = Phase.FAILED if reported == Phase.FAILED else Phase.SUCCEEDED
    else:
        phase = reported or previous or proven or Phase.PENDING
    own = get_condition(kept.conditions, "Ready") if same_generation else None
    theirs = get_condition(status.conditions, "Ready") if reported is not None else None
    if sticky and own is not None:
        ready_reason, ready_message = own.reason, own.message
    elif reported is not None and reported != phase == proven:  # the Jobs overrule the report
        ready_reason, ready_message = reason, message
    elif theirs is not None:
        ready_reason, ready_message = theirs.reason, theirs.message
    elif own is not None and previous == phase:
        ready_reason, ready_message = own.reason, own.message
    elif phase == proven:
        ready_reason, ready_message = reason, message
    else:
        ready_reason, ready_message = phase.value, "waiting for the job's pods"
    conditions = [c for c in status.conditions if c.type not in ("Ready", HEALTH)]
    kept_health = get_condition(kept.conditions, HEALTH)
    if kept_health is not None:
        conditions.append(kept_health)
    if health is not None:
        conditions = set_condition(conditions, HEALTH, *health, generation, now)
    status.phase = phase
    status.observed_generation = generation
    status.conditions = set_condition(
        [*conditions, *([own] if own is not None else [])],
        "Ready",
        "True" if phase == Phase.SUCCEEDED else "False",
        ready_reason,
        ready_message,
        generation,
        now,
    )
    return status.to_wire()
