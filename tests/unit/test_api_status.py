"""Status and conditions: transition times, purity, validation and the camelCase wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from edgeloom.api.status import (
    Condition,
    Phase,
    Progress,
    Status,
    get_condition,
    set_condition,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def condition(type: str, status: str = "True", reason: str = "Ok", at: datetime = T0) -> Condition:
    return Condition(type=type, status=status, reason=reason, last_transition_time=at)


def test_new_condition_is_appended_with_now() -> None:
    out = set_condition([], "Ready", "False", "InvalidSpec", "bad spec", now=T0)

    assert out == [
        Condition(
            type="Ready",
            status="False",
            reason="InvalidSpec",
            message="bad spec",
            last_transition_time=T0,
        )
    ]


def test_time_kept_when_status_unchanged_but_reason_and_message_change() -> None:
    before = [condition("Ready", "True", "Running", at=T0)]

    out = set_condition(
        before, "Ready", "True", "RoundFinished", "round 3 of 10", observed_generation=2, now=T1
    )

    ready = get_condition(out, "Ready")
    assert ready is not None
    assert ready.last_transition_time == T0
    assert (ready.reason, ready.message, ready.observed_generation) == (
        "RoundFinished",
        "round 3 of 10",
        2,
    )


@pytest.mark.parametrize("new_status", ["False", "Unknown"])
def test_time_moves_when_status_changes(new_status: str) -> None:
    before = [condition("Ready", "True", at=T0)]

    out = set_condition(before, "Ready", new_status, "WorkerLost", now=T1)

    assert out[0].last_transition_time == T1
    assert out[0].status == new_status


def test_reconciling_twice_gives_an_identical_list() -> None:
    once = set_condition([], "Ready", "True", "Running", now=T0)

    twice = set_condition(once, "Ready", "True", "Running", now=T1)

    assert twice == once


def test_input_list_and_conditions_are_not_mutated() -> None:
    before = [condition("Ready", "True", at=T0), condition("Progressing", at=T0)]
    snapshot = [c.model_copy(deep=True) for c in before]

    out = set_condition(before, "Ready", "False", "Failed", "boom", now=T1)

    assert before == snapshot
    assert out is not before


def test_other_conditions_are_preserved_in_order() -> None:
    before = [condition("Scheduled"), condition("Ready"), condition("Progressing")]

    out = set_condition(before, "Ready", "False", "Failed", now=T1)

    assert [c.type for c in out] == ["Scheduled", "Ready", "Progressing"]
    assert out[0] is before[0] and out[2] is before[2]


def test_new_condition_goes_last() -> None:
    before = [condition("Scheduled"), condition("Ready")]

    out = set_condition(before, "Degraded", "True", "Straggler", now=T1)

    assert [c.type for c in out] == ["Scheduled", "Ready", "Degraded"]


def test_now_defaults_to_current_utc_second() -> None:
    lower = datetime.now(UTC).replace(microsecond=0)

    out = set_condition([], "Ready", "True", "Running")

    stamp = out[0].last_transition_time
    assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
    assert stamp.microsecond == 0
    assert stamp >= lower


def test_get_condition_finds_by_type_or_returns_none() -> None:
    conditions = [condition("Scheduled"), condition("Ready", "False")]

    assert get_condition(conditions, "Ready") is conditions[1]
    assert get_condition(conditions, "Missing") is None


@pytest.mark.parametrize(
    "reason", ["", "has space", "1Starts", "ends-with-dash", "Trailing,", "with.dot", "a/b"]
)
def test_reason_must_be_camel_case_word(reason: str) -> None:
    with pytest.raises(ValidationError, match="reason"):
        set_condition([], "Ready", "False", reason, now=T0)


@pytest.mark.parametrize("reason", ["A", "InvalidSpec", "Worker_Lost", "Reason2", "A:B,C"])
def test_valid_reasons_are_accepted(reason: str) -> None:
    assert set_condition([], "Ready", "False", reason, now=T0)[0].reason == reason


def test_status_value_must_be_true_false_or_unknown() -> None:
    with pytest.raises(ValidationError, match="status"):
        set_condition([], "Ready", "true", "Running", now=T0)  # type: ignore[arg-type]


def test_condition_wire_form_is_camel_case_rfc3339() -> None:
    wire = Condition(
        type="Ready",
        status="True",
        reason="Running",
        message="m",
        last_transition_time=T0,
        observed_generation=3,
    ).to_wire()

    assert wire == {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "m",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        "observedGeneration": 3,
    }


def test_condition_parses_from_wire_form() -> None:
    wire = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        "observedGeneration": 4,
    }

    parsed = Condition.model_validate(wire)

    assert parsed.last_transition_time == T0
    assert parsed.to_wire() == {**wire, "message": ""}


def test_status_wire_form_is_camel_case_and_drops_unset_progress() -> None:
    status = Status(
        observed_generation=2,
        phase=Phase.RUNNING,
        conditions=[condition("Ready")],
        progress=Progress(round=3, total_rounds=10, participants_ready=9, eta_seconds=12.5),
    )

    wire = status.to_wire()

    assert wire["observedGeneration"] == 2
    assert wire["phase"] == "Running"
    assert wire["conditions"][0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert wire["progress"] == {
        "round": 3,
        "totalRounds": 10,
        "summary": "3/10",
        "participantsReady": 9,
        "etaSeconds": 12.5,
    }


def test_status_round_trips_through_wire_form() -> None:
    status = Status(
        phase=Phase.DEGRADED,
        conditions=[condition("Ready", "False", "WorkerLost")],
        progress=Progress(stage="prune", bytes_total=10),
    )

    assert Status.model_validate(status.to_wire()) == status


@pytest.mark.parametrize(
    "field, value",
    [("round", -1), ("participants_dropped", -2), ("eta_seconds", -0.5), ("bytes_total", -1)],
)
def test_progress_refuses_negative_counts(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field.split("_")[0]):
        Progress(**{field: value})


def test_unknown_status_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Status.model_validate({"phase": "Running", "bogus": 1})


def test_unknown_phase_is_refused() -> None:
    with pytest.raises(ValidationError, match="phase"):
        Status.model_validate({"phase": "Exploded"})


@pytest.mark.parametrize(
    ("fields", "summary"),
    [
        ({"round": 5, "total_rounds": 50}, "5/50"),
        ({"total_rounds": 50}, "0/50"),  # planned, none done yet
        ({"round": 7}, "7"),
        ({"stage": "Loading"}, None),
    ],
)
def test_progress_summary_is_round_over_total_for_the_printer_column(
    fields: dict[str, Any], summary: str | None
) -> None:
    assert Progress(**fields).summary == summary


def test_progress_summary_follows_its_round_and_cannot_be_set_apart() -> None:
    progress = Progress(round=1, total_rounds=3)
    progress.round = 2
    assert progress.to_wire()["summary"] == "2/3"
    forged = Progress.model_validate({"round": 1, "totalRounds": 3, "summary": "3/3"})
    assert forged.summary == "1/3"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.9204514026641846, 0.9205), (23.456789, 23.46), (12345.678, 12350.0), (None, None)],
)
def test_metric_value_is_stored_to_four_significant_digits(
    value: float | None, shown: float | None
) -> None:
    assert Progress(metric_value=value).metric_value == shown
    progress = Progress()
    progress.metric_value = value
    assert progress.to_wire().get("metricValue") == shown
