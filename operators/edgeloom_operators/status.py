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
from typing import Any

from edgeloom.api.registry import KindInfo
from edgeloom.api.status import Phase, Status, get_condition, set_condition

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


def _job_condition(job: dict[str, Any], type: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type and cond.get("status") == "True":
            return cond
    return None


def is_essential(job: dict[str, Any]) -> bool:
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
) -> dict[str, Any]:
    """The status to write: the report (or the current status) with phase, Ready and
    observedGeneration settled.

    Raises
    ------
    pydantic.ValidationError
        When ``report`` does not fit the kind's status model.
    """
    status: Status = info.status_model.model_validate(
        report if report is not None else (current or {})
    )
    proven, reason, message = job_outcome(jobs)
    reported = status.phase if (report is not None or current) else None
    if proven == Phase.FAILED:
        phase = Phase.FAILED
    elif proven == Phase.SUCCEEDED:
        phase = Phase.FAILED if reported == Phase.FAILED else Phase.SUCCEEDED
    elif reported in (*TERMINAL, Phase.RUNNING, Phase.DEGRADED):
        phase = reported
    else:
        phase = proven or Phase.PENDING
    ready = get_condition(status.conditions, "Ready")
    if phase == proven and (reported != phase or ready is None):
        ready_reason, ready_message = reason, message
    elif ready is not None:
        ready_reason, ready_message = ready.reason, ready.message
    else:
        ready_reason, ready_message = phase.value, "waiting for pods to start"
    status.phase = phase
    status.observed_generation = generation
    status.conditions = set_condition(
        status.conditions,
        "Ready",
        "True" if phase == Phase.SUCCEEDED else "False",
        ready_reason,
        ready_message,
        generation,
        now,
    )
    return status.to_wire()
