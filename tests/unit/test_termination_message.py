"""The coordinator's last status, written where the kubelet reads termination messages."""

from __future__ import annotations

import json
from pathlib import Path

from edgeloom.api.kinds.prunejob import PruneJobStatus
from edgeloom.api.status import Phase, set_condition
from edgeloom.runtime.role import TERMINATION_MESSAGE_BYTES, write_termination_message


def test_the_final_status_round_trips_through_the_termination_message(tmp_path: Path) -> None:
    status = PruneJobStatus(phase=Phase.SUCCEEDED, params_before=100, params_after=80)
    status.conditions = set_condition([], "Ready", "True", "Done", "pruned", 3)
    path = tmp_path / "termination-log"
    write_termination_message(path, status)
    assert PruneJobStatus.model_validate(json.loads(path.read_text())) == status


def test_a_long_error_is_shortened_to_fit_the_kubelets_limit(tmp_path: Path) -> None:
    status = PruneJobStatus(phase=Phase.FAILED)
    status.conditions = set_condition([], "Ready", "False", "Failed", "x" * 20_000, 1)
    path = tmp_path / "termination-log"
    write_termination_message(path, status)
    text = path.read_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES
    back = PruneJobStatus.model_validate(json.loads(text))
    assert back.phase == Phase.FAILED
    assert back.conditions[0].message.startswith("xxx")
