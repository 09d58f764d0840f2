"""Status derivation from what the children prove (job and service semantics) and the
resources' reports, the kstatus conditions at each stage, and the report parser."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.handlers import Operator
from edgeloom_operators.plugin import KindPlugin, index
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_operators.reports import parse_report
from edgeloom_operators.splittraining import SplitTrainingPlugin
from edgeloom_operators.status import Verdict, derive_status
from edgeloom_testkit.kinds.echoservice import EchoServicePlugin

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 12, 5, tzinfo=UTC)
SPLIT, PRUNE, ECHO = SplitTrainingPlugin(), PruneJobPlugin(), EchoServicePlugin()


def derive(
    plugin: KindPlugin,
    generation: int,
    current: dict[str, Any] | None,
    children: list[dict[str, Any]],
    report: dict[str, Any] | None = None,
    now: datetime | None = None,
    health: Verdict | None = None,
) -> dict[str, Any]:
    """derive_status over ``children`` of the kind the plugin observes (Jobs, Deployments)."""
    outcome = plugin.outcome({plugin.observes[0].kind: children})
    verdicts = {"WorkersHealthy": health} if health is not None else None
    return derive_status(plugin, generation, current, outcome, report, now, verdicts)


def job(
    name: str,
    essential: bool = True,
    active: int = 0,
    condition: str | None = None,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {"active": active}
    if condition:
        status["conditions"] = [
            {"type": condition, "status": "True", "reason": reason, "message": message}
        ]
    return {
        "metadata": {
            "name": name,
            "annotations": {"edgeloom.io/essential": str(essential).lower()},
        },
        "status": status,
    }


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_a_new_resource_is_pending_and_not_ready() -> None:
    status = derive(SPLIT, 1, {}, [], now=T0)
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 1
    assert ready(status)["status"] == "False"


def test_running_pods_make_it_running_and_a_report_brings_progress() -> None:
    jobs = [job("s", active=1), job("w", essential=False, active=3)]
    assert derive(SPLIT, 1, {}, jobs, now=T0)["phase"] == "Running"
    report = {"phase": "Degraded", "progress": {"round": 3, "participantsDropped": 1}}
    status = derive(SPLIT, 1, {}, jobs, report, now=T0)
    assert status["phase"] == "Degraded"
    assert status["progress"] == {"round": 3, "summary": "3", "participantsDropped": 1}


def test_a_failed_essential_job_fails_the_resource_whatever_the_report_says() -> None:
    jobs = [job("s", condition="Failed", reason="BackoffLimitExceeded", message="too many")]
    status = derive(SPLIT, 2, {}, jobs, {"phase": "Running"}, now=T0)
    assert status["phase"] == "Failed"
    assert ready(status)["reason"] == "BackoffLimitExceeded"
    assert "s: too many" in ready(status)["message"]
    assert status["observedGeneration"] == 2


def test_a_failed_worker_group_alone_does_not_fail_the_resource() -> None:
    jobs = [job("s", active=1), job("w", essential=False, condition="Failed")]
    assert derive(SPLIT, 1, {}, jobs, {"phase": "Running"}, now=T0)["phase"] == "Running"


def test_completion_makes_it_ready_and_keeps_the_typed_result() -> None:
    report = {"phase": "Succeeded", "paramsBefore": 100, "paramsAfter": 80}
    status = derive(PRUNE, 1, {}, [job("p", condition="Complete")], report, now=T0)
    assert status["phase"] == "Succeeded"
    assert ready(status)["status"] == "True"
    assert (status["paramsBefore"], status["paramsAfter"]) == (100, 80)


def test_a_completed_job_whose_report_was_lost_still_succeeds() -> None:
    current = {"phase": "Running", "progress": {"round": 7}}
    status = derive(SPLIT, 1, current, [job("s", condition="Complete")], now=T0)
    assert status["phase"] == "Succeeded"
    assert ready(status)["reason"] == "Completed"
    assert status["progress"]["round"] == 7


def test_rederiving_an_unchanged_status_changes_nothing() -> None:
    jobs = [job("s", active=1)]
    first = derive(SPLIT, 1, {}, jobs, {"phase": "Running"}, now=T0)
    again = derive(SPLIT, 1, first, jobs, now=T1)
    assert again == first  # lastTransitionTime only moves when the condition's status does


def frame(envelope: dict[str, Any], tensors: bool = False) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"envelope": json.dumps(envelope)}}
    data = b""
    if tensors:
        header["x"] = {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}
        data = b"\x00"
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_reports_are_validated_before_they_count() -> None:
    kinds = {SPLIT.info.singular: SPLIT.info}
    subject = "edgeloom.research.splittrainingjob.demo.status"
    parsed = parse_report(subject, frame({"phase": "Running", "progress": {"round": 2}}), kinds)
    assert parsed == (
        ("research", "SplitTrainingJob", "demo"),
        {"phase": "Running", "progress": {"round": 2}},
    )
    assert parse_report(subject, frame({"phase": "Exploded"}), kinds) is None  # not a Phase
    assert parse_report(subject, frame({"phase": "Running"}, tensors=True), kinds) is None
    assert parse_report(subject, b"\xff" * 12, kinds) is None
    assert parse_report("edgeloom.research.unknownkind.demo.status", frame({}), kinds) is None
    good = frame({"phase": "Running"})
    assert parse_report("edgeloom.research.splittrainingjob.a/status.status", good, kinds) is None
    assert parse_report("edgeloom.Research.splittrainingjob.demo.status", good, kinds) is None


def test_a_running_jobs_ready_condition_does_not_flap_between_reports() -> None:
    jobs = [job("s", active=1)]
    report = {  # the job's own wording, with its own timestamps
        "phase": "Running",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "RoundCompleted",
                "message": "round 3",
                "lastTransitionTime": "2026-11-25T11:00:00Z",
            }
        ],
    }
    first = derive(SPLIT, 1, {}, jobs, report, now=T0)
    again = derive(SPLIT, 1, first, jobs, report, now=T1)
    assert again == first
    assert ready(first)["lastTransitionTime"] == "2026-11-25T12:00:00Z"  # the operator's own


def test_a_terminal_phase_sticks_within_its_generation() -> None:
    done = derive(PRUNE, 1, {}, [job("p", condition="Complete")], {"phase": "Succeeded"})
    late = derive(PRUNE, 1, done, [job("p", active=1)], {"phase": "Running"}, now=T1)
    assert late["phase"] == "Succeeded" and ready(late)["status"] == "True"


def test_a_new_generation_is_not_decided_by_the_old_ones_status() -> None:
    invalid = {
        "observedGeneration": 1,
        "phase": "Failed",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSpec",
                "message": "bad",
                "lastTransitionTime": "2026-11-25T11:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    fixed = derive(SPLIT, 2, invalid, [], now=T0)
    assert fixed["phase"] == "Pending"
    assert ready(fixed)["reason"] == "Pending"
    assert fixed["observedGeneration"] == 2


def health(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status["conditions"] if c["type"] == "WorkersHealthy"), None)


def test_the_worker_health_verdict_is_kept_across_reports_and_moves_only_on_change() -> None:
    jobs = [job("s", active=1)]
    report = {"phase": "Running", "progress": {"round": 1}}
    assert health(derive(SPLIT, 1, {}, jobs, report, now=T0)) is None
    unhealthy = ("False", "MetricsStale", "worker 2 (pod w-2): not scraped for 60 s")
    first = derive(SPLIT, 1, {}, jobs, report, now=T0, health=unhealthy)
    assert health(first) is not None
    assert (health(first)["status"], health(first)["reason"]) == ("False", "MetricsStale")
    # a later report (which knows nothing of worker health) keeps the operator's condition
    later = derive(SPLIT, 1, first, jobs, {"phase": "Running"}, now=T1)
    assert health(later) == health(first)
    same = derive(SPLIT, 1, later, jobs, report, now=T1, health=unhealthy)
    assert health(same)["lastTransitionTime"] == health(first)["lastTransitionTime"]
    healed = derive(SPLIT, 1, same, jobs, report, now=T1, health=("True", "WorkersHealthy", ""))
    assert health(healed)["status"] == "True"
    assert health(healed)["lastTransitionTime"] != health(first)["lastTransitionTime"]
    assert ready(healed)["status"] == "False"  # health does not decide Ready


# -- kstatus: Ready, Reconciling and Stalled at every stage -------------------------------------


def summary(status: dict[str, Any]) -> dict[str, str]:
    """Ready, Reconciling and Stalled as {type: status}."""
    wanted = ("Ready", "Reconciling", "Stalled")
    return {c["type"]: c["status"] for c in status["conditions"] if c["type"] in wanted}


PENDING = {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
WORKING = PENDING
DONE = {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
FAILED = {"Ready": "False", "Reconciling": "False", "Stalled": "True"}


def test_a_job_reads_in_progress_then_current_or_failed_to_kstatus() -> None:
    pending = derive(PRUNE, 1, {}, [], now=T0)
    assert (pending["phase"], summary(pending)) == ("Pending", PENDING)
    running = derive(PRUNE, 1, pending, [job("p", active=1)], {"phase": "Running"}, now=T0)
    assert (running["phase"], summary(running)) == ("Running", WORKING)
    done = derive(PRUNE, 1, running, [job("p", condition="Complete")], now=T1)
    assert (done["phase"], summary(done)) == ("Succeeded", DONE)
    failed = derive(PRUNE, 1, running, [job("p", condition="Failed", reason="DeadlineExceeded")])
    assert (failed["phase"], summary(failed)) == ("Failed", FAILED)
    stalled = next(c for c in failed["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "DeadlineExceeded"  # the reason sits on the True condition
    # a job that reports its own failure (a model path that does not exist) is Failed too, once
    # its Job has failed, and says why in its own words
    missing = reported_end("Failed", "no model at /models/x")
    reported = derive(PRUNE, 1, running, [job("p", active=1)], missing, now=T1)
    assert (reported["phase"], summary(reported)) == ("Running", WORKING)
    gone = derive(PRUNE, 1, reported, [job("p", condition="Failed")], missing, now=T1)
    assert (gone["phase"], summary(gone)) == ("Failed", FAILED)
    assert ready(gone)["message"] == "no model at /models/x"


def reported_end(phase: str, message: str, **results: Any) -> dict[str, Any]:
    """A coordinator's terminal report, as JobReporter.finish publishes it."""
    reason = "Completed" if phase == "Succeeded" else "Failed"
    condition = {"status": "True" if phase == "Succeeded" else "False", "reason": reason}
    stamp = {"message": message, "lastTransitionTime": "2026-11-25T11:00:00Z"}
    return {
        "phase": phase,
        "conditions": [{"type": "Ready", **condition, **stamp}],
        **results,
    }


def test_a_terminal_report_waits_for_the_coordinators_job_to_confirm_it() -> None:
    report = reported_end("Succeeded", "pruned to 80 params", paramsBefore=100, paramsAfter=80)
    waiting = derive(PRUNE, 1, {}, [job("p", active=1)], report, now=T0)
    assert (waiting["phase"], summary(waiting)) == ("Running", WORKING)
    assert ready(waiting)["reason"] == "AwaitingConfirmation"
    assert "reported Succeeded" in ready(waiting)["message"]
    between_pods = derive(PRUNE, 1, waiting, [job("p")], report, now=T0)  # none active, no end
    assert between_pods["phase"] == "Running"
    done = derive(PRUNE, 1, waiting, [job("p", condition="Complete")], report, now=T1)
    assert (done["phase"], summary(done)) == ("Succeeded", DONE)
    assert ready(done)["message"] == "pruned to 80 params"  # the job's own words, confirmed
    assert (done["paramsBefore"], done["paramsAfter"]) == (100, 80)


def test_a_degraded_job_stays_degraded_while_its_end_waits() -> None:
    jobs = [job("s", active=1), job("w", essential=False, active=2)]
    degraded = derive(SPLIT, 1, {}, jobs, {"phase": "Degraded"}, now=T0)
    waiting = derive(SPLIT, 1, degraded, jobs, reported_end("Succeeded", "done"), now=T1)
    assert waiting["phase"] == "Degraded"
    assert ready(waiting)["reason"] == "AwaitingConfirmation"


def test_a_failed_coordinator_job_wins_over_a_succeeded_report() -> None:
    forged = reported_end("Succeeded", "all done", paramsAfter=1)
    running = derive(PRUNE, 1, {}, [job("p", active=1)], forged, now=T0)
    assert running["phase"] == "Running"
    failed_job = job("p", condition="Failed", reason="BackoffLimitExceeded", message="3 failures")
    failed = derive(PRUNE, 1, running, [failed_job], forged, now=T1)
    assert (failed["phase"], summary(failed)) == ("Failed", FAILED)
    assert ready(failed)["reason"] == "BackoffLimitExceeded"
    assert ready(failed)["message"] == "p: 3 failures"
    later = derive(PRUNE, 1, failed, [failed_job], forged, now=T1)
    assert later["phase"] == "Failed"


def test_a_completed_coordinator_job_wins_over_a_failed_report() -> None:
    stale = reported_end("Failed", "only 1 workers left")  # an earlier attempt's, or forged
    done = derive(SPLIT, 1, {}, [job("s", condition="Complete")], stale, now=T0)
    assert (done["phase"], summary(done)) == ("Succeeded", DONE)
    assert ready(done)["reason"] == "Completed"


def test_the_summary_conditions_keep_their_times_while_their_status_holds() -> None:
    first = derive(PRUNE, 1, {}, [job("p", active=1)], {"phase": "Running"}, now=T0)
    later = derive(PRUNE, 1, first, [job("p", active=1)], {"phase": "Degraded"}, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times["Reconciling"] == times["Stalled"] == "2026-11-25T12:00:00Z"
    done = derive(PRUNE, 1, later, [job("p", condition="Complete")], now=T1)
    moved = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert moved["Ready"] == moved["Reconciling"] == "2026-11-25T12:05:00Z"
    assert moved["Stalled"] == "2026-11-25T12:00:00Z"


class FakeKube:
    """Records status patches and events instead of calling an API server."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[str] = []

    def patch_status(self, info: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)

    def event(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append(reason)


def body_of(plugin: KindPlugin, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "edgeloom.io/v1alpha1",
        "kind": plugin.info.kind,
        "metadata": {"name": "x", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": spec,
    }


class ClusterKube(FakeKube):
    """One resource with its Jobs and Pods, as :meth:`Operator.refresh` reads them."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = body
        self.children: dict[str, list[dict[str, Any]]] = {"Job": [], "Pod": []}

    def get_resource(self, *_: Any) -> dict[str, Any]:
        return {**self.body, "status": self.statuses[-1] if self.statuses else {}}

    def list(self, api_version: str, kind: str, *_: Any) -> list[dict[str, Any]]:
        return self.children[kind]


def finished_pod(role: str, termination_message: dict[str, Any]) -> dict[str, Any]:
    terminated = {"finishedAt": "2026-11-25T12:04:00Z", "message": json.dumps(termination_message)}
    return {
        "metadata": {"labels": {"edgeloom.io/role": role}},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def test_a_forged_succeeded_report_neither_ends_the_job_nor_outlives_its_failure() -> None:
    kube = ClusterKube(body_of(PRUNE, {"model": {"builtin": "minilm"}, "ratio": 0.2}))
    config = OperatorConfig(nats_url="nats://nats:4222")
    operator = Operator(kube, config, index([PRUNE]))  # type: ignore[arg-type]
    key = ("ns", "PruneJob", "x")
    kube.children["Job"] = [job("x-pruner", active=1)]
    operator.reports[key] = reported_end("Succeeded", "all done", paramsAfter=1)

    operator.refresh(PRUNE, "ns", "x")
    assert kube.statuses[-1]["phase"] == "Running"

    kube.children["Job"] = [job("x-pruner", condition="Failed", reason="BackoffLimitExceeded")]
    kube.children["Pod"] = [finished_pod("pruner", reported_end("Failed", "no model at /m"))]
    operator.refresh(PRUNE, "ns", "x")
    failed = kube.statuses[-1]
    assert (failed["phase"], summary(failed)) == ("Failed", FAILED)
    assert ready(failed)["message"] == "no model at /m"  # the pod's own last word, not NATS's
    assert "paramsAfter" not in failed
    assert kube.events == ["Running", "Failed"]


@pytest.mark.parametrize("plugin", [PRUNE, ECHO], ids=["job", "service"])
def test_an_invalid_spec_reads_failed_to_kstatus_and_sticks(plugin: KindPlugin) -> None:
    kube = FakeKube()
    config = OperatorConfig(nats_url="nats://nats:4222")
    operator = Operator(kube, config, index([plugin]))  # type: ignore[arg-type]
    with pytest.raises(kopf.PermanentError):
        operator.reconcile(plugin, body_of(plugin, {"ratio": 7, "replicas": -1}), "create")
    (invalid,) = kube.statuses
    assert (invalid["phase"], summary(invalid)) == ("Failed", FAILED)
    assert invalid["observedGeneration"] == 3
    assert {c["reason"] for c in invalid["conditions"] if c["status"] == "True"} == {"InvalidSpec"}
    assert kube.events == ["InvalidSpec"]
    # children left from an earlier generation do not make it look healthy again
    again = derive(plugin, 3, invalid, [deployment(1, 1)] if plugin is ECHO else [job("p")])
    assert (again["phase"], summary(again)) == ("Failed", FAILED)


def deployment(
    replicas: int,
    available: int,
    progressing: str = "NewReplicaSetAvailable",
    generation: int = 1,
    observed: int = 1,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "x-echo", "generation": generation},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"edgeloom.io/job": "x", "edgeloom.io/role": "echo"}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": max(replicas, available),
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False"},
                {
                    "type": "Progressing",
                    "status": "False" if progressing == "ProgressDeadlineExceeded" else "True",
                    "reason": progressing,
                    "message": f"rollout: {progressing}",
                },
            ],
        },
    }


def available(status: dict[str, Any]) -> tuple[str, str]:
    cond = next(c for c in status["conditions"] if c["type"] == "Available")
    return cond["status"], cond["reason"]


def test_a_service_reads_its_state_from_its_deployment_like_kstatus_does() -> None:
    nothing = derive(ECHO, 1, {}, [], now=T0)
    assert (nothing["phase"], summary(nothing)) == ("Pending", PENDING)
    rolling = derive(ECHO, 1, nothing, [deployment(1, 0, "ReplicaSetUpdated")], now=T0)
    assert (rolling["phase"], summary(rolling)) == ("Pending", PENDING)
    assert available(rolling) == ("False", "Progressing")
    up = derive(ECHO, 1, rolling, [deployment(1, 1)], now=T1)
    assert (up["phase"], summary(up)) == ("Running", DONE)
    assert available(up) == ("True", "Available")
    ready_condition = ready(up)
    assert (ready_condition["reason"], ready_condition["message"]) == (
        "Available",
        "1/1 replicas available",
    )
    assert (up["replicas"], up["readyReplicas"], up["availableReplicas"]) == (1, 1, 1)
    assert up["selector"] == "edgeloom.io/job=x,edgeloom.io/role=echo"  # the scale subresource's
    # a pod lost after the rollout: Degraded until its replacement is available again
    lost = derive(ECHO, 1, up, [deployment(1, 0)], now=T1)
    assert (lost["phase"], summary(lost)) == ("Degraded", WORKING)
    assert available(lost) == ("False", "ReplicasUnavailable")
    back = derive(ECHO, 1, lost, [deployment(1, 1)], now=T1)
    assert (back["phase"], summary(back)) == ("Running", DONE)
    # scaled: a new generation the Deployment has not observed yet is a rollout
    scaled = derive(ECHO, 2, back, [deployment(2, 1, generation=2, observed=1)], now=T1)
    assert (scaled["phase"], summary(scaled)) == ("Running", WORKING)
    assert "1/2 replicas available" in ready(scaled)["message"]


def test_a_stuck_service_rollout_is_stalled_and_recovers() -> None:
    stuck = derive(ECHO, 1, {}, [deployment(2, 0, "ProgressDeadlineExceeded")], now=T0)
    assert (stuck["phase"], summary(stuck)) == ("Failed", FAILED)
    assert ready(stuck)["reason"] == "ProgressDeadlineExceeded"
    fixed = derive(ECHO, 1, stuck, [deployment(2, 2)], now=T1)  # services have no end state
    assert (fixed["phase"], summary(fixed)) == ("Running", DONE)


def test_a_services_report_brings_progress_but_not_its_phase() -> None:
    report = {"phase": "Succeeded", "progress": {"stage": "Serving"}}
    status = derive(ECHO, 1, {}, [deployment(1, 1)], report, now=T0)
    assert status["phase"] == "Running"
    assert status["progress"] == {"stage": "Serving"}


def test_a_running_job_is_not_reported_back_to_pending() -> None:
    first = derive(SPLIT, 1, {}, [job("s", active=1)], {"phase": "Running"}, now=T0)
    late = derive(SPLIT, 1, first, [job("s")], {"phase": "Pending"}, now=T1)
    assert late["phase"] == "Running"
    assert summary(late) == summary(first)


def test_a_new_generation_keeps_ready_transition_time_while_it_stays_false() -> None:
    jobs = [job("s", active=1)]
    first = derive(SPLIT, 1, {}, jobs, {"phase": "Running"}, now=T0)
    changed = derive(SPLIT, 2, first, jobs, {"phase": "Running"}, now=T1)
    assert changed["observedGeneration"] == 2
    times = {
        c["type"]: (c["lastTransitionTime"], c["observedGeneration"]) for c in changed["conditions"]
    }
    assert times["Ready"] == times["Reconciling"] == ("2026-11-25T12:00:00Z", 2)
    done = derive(SPLIT, 2, changed, [job("s", condition="Complete")], now=T1)
    assert ready(done)["lastTransitionTime"] == "2026-11-25T12:05:00Z"  # True now: it moves


class ApplyingKube(ClusterKube):
    """Applies children like the API server would, and lets a child's event refresh the status
    (to Running) while the create reconcile is still writing the others."""

    def __init__(self, body: dict[str, Any], operator: list[Operator]) -> None:
        super().__init__(body)
        self.operator = operator

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Job":
            self.children["Job"].append({**obj, "status": {"active": 1}})
            self.operator[0].refresh(PRUNE, "ns", "x")  # the Job's event, in another thread
        return obj


def test_the_create_reconcile_never_overwrites_a_running_status_with_pending() -> None:
    body = body_of(PRUNE, {"model": {"builtin": "minilm"}, "ratio": 0.2})
    holder: list[Operator] = []
    kube = ApplyingKube(body, holder)
    config = OperatorConfig(nats_url="nats://nats:4222")
    holder.append(Operator(kube, config, index([PRUNE])))  # type: ignore[arg-type]
    holder[0].reconcile(PRUNE, body, "create")
    assert [s["phase"] for s in kube.statuses] == ["Running"]


def test_a_resource_being_deleted_keeps_its_last_status() -> None:
    body = body_of(PRUNE, {"model": {"builtin": "minilm"}, "ratio": 0.2})
    kube = ClusterKube(body)
    config = OperatorConfig(nats_url="nats://nats:4222")
    operator = Operator(kube, config, index([PRUNE]))  # type: ignore[arg-type]
    kube.children["Job"] = [job("x-pruner", active=1)]
    operator.refresh(PRUNE, "ns", "x")
    assert [s["phase"] for s in kube.statuses] == ["Running"]
    # deleting: the API server bumps the generation, the Jobs and their pods go away
    body["metadata"] |= {"deletionTimestamp": "2026-11-25T12:06:00Z", "generation": 4}
    kube.children["Job"] = []
    operator.refresh(PRUNE, "ns", "x")
    assert [s["phase"] for s in kube.statuses] == ["Running"]
    assert kube.events == ["Running"]
