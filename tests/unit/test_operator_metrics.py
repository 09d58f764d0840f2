"""The operator's metrics: outcomes, per-phase counts and series that exist before events."""

from __future__ import annotations

import pytest

from edgeloom_operators.metrics import OperatorMetrics


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.factory.registry.get_sample_value(name, labels)


def test_every_counter_series_exists_at_zero_before_its_first_event() -> None:
    m = OperatorMetrics()
    m.initialize(["PruneJob"])
    assert value(m, "edgeloom_operator_reconciles_total", kind="PruneJob", outcome="error") == 0
    assert (
        value(m, "edgeloom_operator_worker_actions_total", kind="PruneJob", outcome="dropped") == 0
    )


def test_reconciles_are_counted_by_outcome_and_timed() -> None:
    m = OperatorMetrics()
    with m.reconcile("PruneJob"):
        pass
    with pytest.raises(ValueError), m.reconcile("PruneJob"):
        raise ValueError("apply failed")
    with pytest.raises(RuntimeError), m.reconcile("PruneJob") as outcome:
        outcome.value = "invalid"
        raise RuntimeError("invalid spec")
    for outcome in ("success", "error", "invalid"):
        assert value(m, "edgeloom_operator_reconciles_total", kind="PruneJob", outcome=outcome) == 1
    assert value(m, "edgeloom_operator_reconcile_duration_seconds_count", kind="PruneJob") == 3


def test_resources_are_counted_per_phase_and_forgotten_when_gone() -> None:
    m = OperatorMetrics()
    m.phase(("ns", "PruneJob", "a"), "Running")
    m.phase(("ns", "PruneJob", "b"), "Running")
    m.phase(("ns", "PruneJob", "a"), "Succeeded")
    assert value(m, "edgeloom_operator_resources", kind="PruneJob", phase="Running") == 1
    assert value(m, "edgeloom_operator_resources", kind="PruneJob", phase="Succeeded") == 1
    m.phase(("ns", "PruneJob", "b"), None)
    assert value(m, "edgeloom_operator_resources", kind="PruneJob", phase="Running") == 0
