"""Status derivation from child Jobs and job reports, and the report parser."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from typing import Any

from edgeloom.api.kinds.prunejob import KIND as PRUNE
from edgeloom.api.kinds.splittraining import KIND as SPLIT
from edgeloom_operators import handlers
from edgeloom_operators.reports import parse_report
from edgeloom_operators.status import derive_status

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 12, 5, tzinfo=UTC)


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
    status = derive_status(SPLIT, 1, {}, [], now=T0)
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 1
    assert ready(status)["status"] == "False"


def test_running_pods_make_it_running_and_a_report_brings_progress() -> None:
    jobs = [job("s", active=1), job("w", essential=False, active=3)]
    assert derive_status(SPLIT, 1, {}, jobs, now=T0)["phase"] == "Running"
    report = {"phase": "Degraded", "progress": {"round": 3, "participantsDropped": 1}}
    status = derive_status(SPLIT, 1, {}, jobs, report, now=T0)
    assert status["phase"] == "Degraded"
    assert status["progress"] == {"round": 3, "participantsDropped": 1}


def test_a_failed_essential_job_fails_the_resource_whatever_the_report_says() -> None:
    jobs = [job("s", condition="Failed", reason="BackoffLimitExceeded", message="too many")]
    status = derive_status(SPLIT, 2, {}, jobs, {"phase": "Running"}, now=T0)
    assert status["phase"] == "Failed"
    assert ready(status)["reason"] == "BackoffLimitExceeded"
    assert "s: too many" in ready(status)["message"]
    assert status["observedGeneration"] == 2


def test_a_failed_worker_group_alone_does_not_fail_the_resource() -> None:
    jobs = [job("s", active=1), job("w", essential=False, condition="Failed")]
    assert derive_status(SPLIT, 1, {}, jobs, {"phase": "Running"}, now=T0)["phase"] == "Running"


def test_completion_makes_it_ready_and_keeps_the_typed_result() -> None:
    report = {"phase": "Succeeded", "paramsBefore": 100, "paramsAfter": 80}
    status = derive_status(PRUNE, 1, {}, [job("p", condition="Complete")], report, now=T0)
    assert status["phase"] == "Succeeded"
    assert ready(status)["status"] == "True"
    assert (status["paramsBefore"], status["paramsAfter"]) == (100, 80)


def test_a_completed_job_whose_report_was_lost_still_succeeds() -> None:
    current = {"phase": "Running", "progress": {"round": 7}}
    status = derive_status(SPLIT, 1, current, [job("s", condition="Complete")], now=T0)
    assert status["phase"] == "Succeeded"
    assert ready(status)["reason"] == "Completed"
    assert status["progress"]["round"] == 7


def test_rederiving_an_unchanged_status_changes_nothing() -> None:
    jobs = [job("s", active=1)]
    first = derive_status(SPLIT, 1, {}, jobs, {"phase": "Running"}, now=T0)
    again = derive_status(SPLIT, 1, first, jobs, now=T1)
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
    handlers.KINDS.setdefault(SPLIT.singular, SPLIT)
    subject = "edgeloom.research.splittrainingjob.demo.status"
    parsed = parse_report(subject, frame({"phase": "Running", "progress": {"round": 2}}))
    assert parsed == (
        ("research", "SplitTrainingJob", "demo"),
        {"phase": "Running", "progress": {"round": 2}},
    )
    assert parse_report(subject, frame({"phase": "Exploded"})) is None  # not a Phase
    assert parse_report(subject, frame({"phase": "Running"}, tensors=True)) is None
    assert parse_report(subject, b"\xff" * 12) is None
    assert parse_report("edgeloom.research.unknownkind.demo.status", frame({})) is None
    good = frame({"phase": "Running"})
    assert parse_report("edgeloom.research.splittrainingjob.a/status.status", good) is None
    assert parse_report("edgeloom.Research.splittrainingjob.demo.status", good) is None


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
    first = derive_status(SPLIT, 1, {}, jobs, report, now=T0)
    again = derive_status(SPLIT, 1, first, jobs, report, now=T1)
    assert again == first
    assert ready(first)["lastTransitionTime"] == "2026-11-25T12:00:00Z"  # the operator's own


def test_a_terminal_phase_sticks_within_its_generation() -> None:
    done = derive_status(PRUNE, 1, {}, [job("p", condition="Complete")], {"phase": "Succeeded"})
    late = derive_status(PRUNE, 1, done, [job("p", active=1)], {"phase": "Running"}, now=T1)
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
    fixed = derive_status(SPLIT, 2, invalid, [], now=T0)
    assert fixed["phase"] == "Pending"
    assert ready(fixed)["reason"] == "Pending"
    assert fixed["observedGeneration"] == 2


def health(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status["conditions"] if c["type"] == "WorkersHealthy"), None)


def test_the_worker_health_verdict_is_kept_across_reports_and_moves_only_on_change() -> None:
    jobs = [job("s", active=1)]
    report = {"phase": "Running", "progress": {"round": 1}}
    assert health(derive_status(SPLIT, 1, {}, jobs, report, now=T0)) is None
    unhealthy = ("False", "MetricsStale", "worker 2 (pod w-2): not scraped for 60 s")
    first = derive_status(SPLIT, 1, {}, jobs, report, now=T0, health=unhealthy)
    assert health(first) is not None
    assert (health(first)["status"], health(first)["reason"]) == ("False", "MetricsStale")
    # a later report (which knows nothing of worker health) keeps the operator's condition
    later = derive_status(SPLIT, 1, first, jobs, {"phase": "Running"}, now=T1)
    assert health(later) == health(first)
    same = derive_status(SPLIT, 1, later, jobs, report, now=T1, health=unhealthy)
    assert health(same)["lastTransitionTime"] == health(first)["lastTransitionTime"]
    healed = derive_status(
        SPLIT, 1, same, jobs, report, now=T1, health=("True", "WorkersHealthy", "")
    )
    assert health(healed)["status"] == "True"
    assert health(healed)["lastTransitionTime"] != health(first)["lastTransitionTime"]
    assert ready(healed)["status"] == "False"  # health does not decide Ready
