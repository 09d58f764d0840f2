"""Pure status derivation: what a resource's ``.status`` should be, from what its children
prove (an :class:`Outcome`) and the resource's own latest report.

Two shapes of kind (:class:`Semantics`):

- **jobs** run to an end. The job's report (a NATS status message, or the coordinator pod's
  termination message) carries phase, progress, conditions and typed results; the Jobs decide
  the terminal outcome. A terminal report (Succeeded or Failed) only says the end is near: the
  resource stays Running until the coordinator's Job completes or fails, and that Job's
  verdict is the phase, whatever the report says, so a forged or stale report cannot end a
  job or overrule its Job. The Jobs alone also decide when the report cannot (a pod that
  crashed before reporting, a report lost while the operator was down). ``Ready`` is True
  exactly when the resource has Succeeded, so ``kubectl wait --for=condition=Ready`` means
  "finished with a result".
- **services** run until deleted. Their Deployments decide the phase, as a Deployment's own
  conditions would: Running and ``Ready``/``Available`` when every replica is available,
  Pending or Running while a rollout progresses, Degraded when replicas are missing after it,
  Failed when the rollout exceeded its progress deadline. Reports add progress and results.

Every kind gets the kstatus trio (:func:`edgeloom.api.status.set_summary_conditions`):
``Ready``, ``Reconciling`` (work in progress) and ``Stalled`` (Failed), so GitOps tools read a
failed resource as Failed rather than in progress forever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from edgeloom.api.registry import KindInfo
from edgeloom.api.status import (
    READY,
    SUMMARY_CONDITIONS,
    Phase,
    Status,
    get_condition,
    set_condition,
    set_summary_conditions,
)

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)
ACTIVE = (Phase.RUNNING, Phase.DEGRADED)
"""Phases a job's reports cannot turn back into Pending within a generation."""
INVALID_SPEC = "InvalidSpec"
"""Ready reason of a resource whose spec does not validate (sticks within its generation)."""
AWAITING_CONFIRMATION = "AwaitingConfirmation"
"""Ready reason while a job's terminal report waits for its coordinator's Job to end."""
AVAILABLE = "Available"
"""Condition a service kind carries beside Ready: its Deployments' replicas are all available."""
Verdict = tuple[Literal["True", "False", "Unknown"], str, str]
"""(status, reason, message) of a condition the operator owns."""


@dataclass(frozen=True)
class Outcome:
    """What a resource's children prove.

    ``phase`` None: nothing yet. ``decisive``: the phase stands whatever the resource reports
    (a job's Failed or Succeeded; a service's state from its Deployments). ``available``: a
    service's replicas are all available. ``conditions``: conditions the children decide (a
    service's Available); ``fields``: status fields they decide (a service's replica counts),
    by their wire names.
    """

    phase: Phase | None = None
    reason: str = ""
    message: str = ""
    decisive: bool = False
    available: bool = False
    conditions: Mapping[str, Verdict] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)


def _finished(phase: Phase, outcome: Outcome) -> bool:
    return phase == Phase.SUCCEEDED


def _serving(phase: Phase, outcome: Outcome) -> bool:
    return phase == Phase.RUNNING and outcome.available


@dataclass(frozen=True)
class Semantics:
    """How one shape of kind reads its phase.

    terminal
        Phases that stick within a generation (a late pod's report cannot undo them).
    reports_phase
        Whether the resource's own reports may set the phase (jobs) or only its children do
        (services); a reported phase in ``terminal`` waits until the children prove one.
    ready
        Whether the resource is Ready in ``phase`` given what its children prove.
    waiting
        The Ready message while nothing is proven yet.
    """

    terminal: tuple[Phase, ...]
    reports_phase: bool
    ready: Callable[[Phase, Outcome], bool]
    waiting: str


JOB = Semantics(TERMINAL, True, _finished, "waiting for the job's pods")
"""Ready: Succeeded (finished with a result)."""
SERVICE = Semantics((), False, _serving, "waiting for the service's pods")
"""Ready: Running with every replica available."""


class StatusRules(Protocol):
    """What :func:`derive_status` needs of a kind (a kind plugin has it)."""

    @property
    def info(self) -> KindInfo: ...

    @property
    def semantics(self) -> Semantics: ...

    @property
    def owned_conditions(self) -> tuple[str, ...]: ...


def _true_condition(obj: Mapping[str, Any], type: str) -> dict[str, Any] | None:
    cond = _condition(obj, type)
    return cond if cond is not None and cond.get("status") == "True" else None


def _condition(obj: Mapping[str, Any], type: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type:
            return dict(cond)
    return None


def is_essential(job: Mapping[str, Any]) -> bool:
    """Whether a child Job runs a coordinating role (its failure fails the resource)."""
    annotations = job["metadata"].get("annotations") or {}
    return bool(annotations.get("edgeloom.io/essential", "true") == "true")


def job_outcome(jobs: Sequence[Mapping[str, Any]]) -> Outcome:
    """Job semantics: Failed when an essential Job failed, Succeeded when every essential Job
    completed (both decisive), Running when a pod is active, else nothing proven."""
    essential = [j for j in jobs if is_essential(j)]
    for job in essential:
        failed = _true_condition(job, "Failed")
        if failed is not None:
            reason = failed.get("reason") or "JobFailed"
            detail = failed.get("message") or "the Job failed"
            message = f"{job['metadata']['name']}: {detail}"
            return Outcome(Phase.FAILED, reason, message, decisive=True)
    if essential and all(_true_condition(j, "Complete") for j in essential):
        message = "every coordinating pod finished successfully"
        return Outcome(Phase.SUCCEEDED, "Completed", message, decisive=True)
    if any((j.get("status") or {}).get("active") for j in jobs):
        return Outcome(Phase.RUNNING, "Running", "pods are running")
    return Outcome()


def _selector(deployments: Sequence[Mapping[str, Any]]) -> str:
    """The labels every Deployment's pods carry, as a selector string (scale subresource)."""
    shared: dict[str, str] | None = None
    for d in deployments:
        labels = dict(((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
        if shared is not None:
            labels = {k: v for k, v in shared.items() if labels.get(k) == v}
        shared = labels
    return ",".join(f"{k}={v}" for k, v in sorted((shared or {}).items()))


def deployment_outcome(deployments: Sequence[Mapping[str, Any]]) -> Outcome:
    """Service semantics, read from the service's Deployments the way ``kubectl rollout
    status`` reads one: every replica updated and available → Running and Available; a
    rollout in progress (new spec not yet observed, or the Progressing condition not yet at
    NewReplicaSetAvailable) → Pending while nothing is available, else Running, not Available;
    replicas missing after the rollout (a pod deleted, a node lost) → Degraded; the rollout
    past its progress deadline → Failed. No Deployment yet: nothing proven."""
    if not deployments:
        return Outcome()
    ordered = sorted(deployments, key=lambda d: str(d["metadata"]["name"]))

    def total(key: str) -> int:
        return sum(int((d.get("status") or {}).get(key) or 0) for d in ordered)

    desired = sum(int((d.get("spec") or {}).get("replicas", 1)) for d in ordered)
    available, updated = total("availableReplicas"), total("updatedReplicas")
    fields = {
        "replicas": total("replicas"),
        "readyReplicas": total("readyReplicas"),
        "availableReplicas": available,
        "selector": _selector(ordered),
    }

    def state(phase: Phase, reason: str, message: str) -> Outcome:
        serving = phase == Phase.RUNNING and reason == AVAILABLE
        verdict: Verdict = ("True" if serving else "False", reason, message)
        return Outcome(phase, reason, message, True, serving, {AVAILABLE: verdict}, fields)

    rolling = []
    for d in ordered:
        name, status = d["metadata"]["name"], d.get("status") or {}
        progressing = _condition(d, "Progressing") or {}
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            detail = progressing.get("message") or "the rollout exceeded its progress deadline"
            return state(Phase.FAILED, "ProgressDeadlineExceeded", f"{name}: {detail}")
        want = int((d.get("spec") or {}).get("replicas", 1))
        observed = int(status.get("observedGeneration") or 0) >= int(
            d["metadata"].get("generation") or 1
        )
        finished = progressing.get("reason") == "NewReplicaSetAvailable"
        if want and not (observed and finished and int(status.get("updatedReplicas") or 0) >= want):
            rolling.append(name)
    counts = f"{available}/{desired} replicas available"
    if rolling:
        message = f"rolling out {', '.join(rolling)}: {updated}/{desired} updated, {counts}"
        return state(Phase.RUNNING if available else Phase.PENDING, "Progressing", message)
    if available < desired:
        return state(Phase.DEGRADED, "ReplicasUnavailable", counts)
    return state(Phase.RUNNING, AVAILABLE, counts)


def derive_status(
    rules: StatusRules,
    generation: int,
    current: dict[str, Any] | None,
    outcome: Outcome,
    report: dict[str, Any] | None = None,
    now: datetime | None = None,
    verdicts: Mapping[str, Verdict] | None = None,
) -> dict[str, Any]:
    """The status to write: progress and results from the report (else the current status),
    with phase, the summary conditions and observedGeneration settled by the kind's
    :class:`Semantics` and the rules of the module docstring.

    Only a decisive outcome writes a terminal phase: a terminal report before it keeps the
    resource Running (Degraded when it was) with Ready's reason ``AwaitingConfirmation``.
    A terminal phase already written for this generation sticks (a late or retried pod's report
    cannot turn Succeeded back into Running), and so does an invalid spec's Failed; a job that
    is Running or Degraded is never reported back to Pending in the same generation; a status
    written for an older generation does not decide the phase of the new one. The operator
    owns ``Ready``, ``Reconciling``, ``Stalled``, the conditions the children decide and the
    kind's ``owned_conditions`` (``verdicts``, else the ones already written): their
    lastTransitionTime moves only when their status does, across generations too.

    Raises
    ------
    pydantic.ValidationError
        When ``report`` does not fit the kind's status model.
    """
    info, semantics = rules.info, rules.semantics
    kept = info.status_model.model_validate(current or {})
    same_generation = bool(current) and kept.observed_generation == generation
    previous = kept.phase if same_generation else None
    own = get_condition(kept.conditions, READY) if same_generation else None
    invalid = previous == Phase.FAILED and own is not None and own.reason == INVALID_SPEC
    sticky = previous is not None and (previous in semantics.terminal or invalid)
    status: Status
    reported: Phase | None = None
    if report is not None and not sticky:
        status = info.status_model.model_validate(report)
        reported = status.phase if semantics.reports_phase else None
    else:
        status = kept
    proven = outcome.phase
    awaiting = reported in semantics.terminal and not outcome.decisive
    phase: Phase
    if sticky and previous is not None:
        phase = previous
    elif outcome.decisive and proven is not None:
        phase = proven
    elif awaiting:  # the report's end, unconfirmed: still working, as far as anyone can prove
        phase = Phase.DEGRADED if previous == Phase.DEGRADED else Phase.RUNNING
    elif reported == Phase.PENDING and previous in ACTIVE:
        phase = previous  # started is started: a late or odd report does not undo it
    else:
        phase = reported or previous or proven or Phase.PENDING
    theirs = get_condition(status.conditions, READY) if reported is not None else None
    if sticky and own is not None:
        reason, message = own.reason, own.message
    elif awaiting and reported is not None:
        reason = AWAITING_CONFIRMATION
        message = f"the job reported {reported.value}; waiting for its Job to confirm it"
    elif reported is not None and reported != phase == proven:  # the children overrule it
        reason, message = outcome.reason, outcome.message
    elif theirs is not None:
        reason, message = theirs.reason, theirs.message
    elif outcome.decisive and phase == proven:
        reason, message = outcome.reason, outcome.message
    elif own is not None and previous == phase:
        reason, message = own.reason, own.message
    elif phase == proven:
        reason, message = outcome.reason, outcome.message
    else:
        reason, message = phase.value, semantics.waiting
    decided = {**outcome.conditions, **(verdicts or {})}
    owned = {*rules.owned_conditions, *decided}
    keep = owned | set(SUMMARY_CONDITIONS)  # a new generation moves them only if their status does
    conditions = [c for c in status.conditions if c.type not in owned | set(SUMMARY_CONDITIONS)]
    conditions += [c for c in kept.conditions if c.type in keep]  # their own order and times
    for type, verdict in decided.items():
        conditions = set_condition(conditions, type, *verdict, generation, now)
    status.phase = phase
    status.observed_generation = generation
    status.conditions = set_summary_conditions(
        conditions, phase, semantics.ready(phase, outcome), reason, message, generation, now
    )
    wire = status.to_wire()
    if outcome.fields:
        fields = {k: v for k, v in outcome.fields.items() if v is not None}
        wire = info.status_model.model_validate({**wire, **fields}).to_wire()
    return wire
