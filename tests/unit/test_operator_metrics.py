"""The operator's metrics: outcomes, per-phase counts and series that exist before events."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.handlers import Operator, register
from edgeloom_operators.metrics import PHASES, OperatorMetrics
from edgeloom_operators.plugin import KindPlugin, index
from edgeloom_operators.prunejob import PruneJobPlugin


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


def phase_series(m: OperatorMetrics) -> dict[tuple[str, str, str, str], dict[str, float]]:
    """(kind, resource_namespace, name, uid) -> {phase: value} of the per-resource series."""
    out: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for family in m.factory.registry.collect():
        if family.name != "edgeloom_operator_resource_phase":
            continue
        for sample in family.samples:
            labels = sample.labels
            resource = (labels["kind"], labels["resource_namespace"], labels["name"], labels["uid"])
            out.setdefault(resource, {})[labels["phase"]] = sample.value
    return out


def test_each_resource_has_a_series_per_phase_with_its_name_and_uid() -> None:
    m = OperatorMetrics()
    m.phase(("ml", "PruneJob", "a"), "Running", "uid-1")
    m.phase(("ml", "PruneJob", "b"), "Failed", "uid-2")
    series = phase_series(m)
    assert series[("PruneJob", "ml", "a", "uid-1")] == {p: float(p == "Running") for p in PHASES}
    assert series[("PruneJob", "ml", "b", "uid-2")]["Failed"] == 1
    m.phase(("ml", "PruneJob", "a"), "Succeeded", "uid-1")
    assert phase_series(m)[("PruneJob", "ml", "a", "uid-1")]["Succeeded"] == 1
    assert phase_series(m)[("PruneJob", "ml", "a", "uid-1")]["Running"] == 0


def test_a_recreated_namesake_replaces_the_previous_runs_series() -> None:
    m = OperatorMetrics()
    m.phase(("ml", "PruneJob", "a"), "Failed", "first")
    m.phase(("ml", "PruneJob", "a"), "Pending", "second")
    assert set(phase_series(m)) == {("PruneJob", "ml", "a", "second")}
    assert value(m, "edgeloom_operator_resources", kind="PruneJob", phase="Failed") == 0
    m.phase(("ml", "PruneJob", "a"), None)
    assert phase_series(m) == {}


class OneResourceKube:
    """One resource with one running Job; takes its status patches."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def get_resource(self, *_: Any) -> dict[str, Any]:
        return self.body

    def list(self, api_version: str, kind: str, *_: Any) -> list[dict[str, Any]]:
        running = {"metadata": {"name": "p-pruner"}, "status": {"active": 1, "ready": 1}}
        return [running] if kind == "Job" else []

    def patch_status(self, info: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.body["status"] = status

    def event(self, *_: Any) -> None:
        pass


def deleted_handler(registry: kopf.OperatorRegistry, plural: str) -> Any:
    (handler,) = [
        h
        for h in registry._watching.get_all_handlers()
        if plural in (h.selector.plural, h.selector.any_name) and h.id == "forget-deleted"
    ]
    return handler.fn


def test_deleting_a_resource_drops_it_from_the_gauges_without_another_refresh() -> None:
    plugin: KindPlugin = PruneJobPlugin()
    registry = kopf.OperatorRegistry()
    slot = register(registry, [plugin])
    body = {
        "apiVersion": "edgeloom.io/v1alpha1",
        "kind": "PruneJob",
        "metadata": {"name": "p", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {},
    }
    config = OperatorConfig(nats_url="nats://n:4222")
    operator = Operator(kube=OneResourceKube(body), config=config, plugins=index([plugin]))  # type: ignore[arg-type]
    slot.current = operator
    operator.refresh(plugin, "ml", "p")
    m = operator.metrics
    assert value(m, "edgeloom_operator_resources", kind="PruneJob", phase="Running") == 1
    assert phase_series(m)[("PruneJob", "ml", "p", "u-1")]["Running"] == 1

    # the watch's last word on it; its Jobs went first, so no child event will refresh it
    deleted_handler(registry, "prunejobs")(type="DELETED", body=kopf.Body(body))
    assert value(m, "edgeloom_operator_resources", kind="PruneJob", phase="Running") == 0
    assert phase_series(m) == {}
