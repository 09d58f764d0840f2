"""The operator's own Prometheus metrics, declared once (naming rules of
:class:`edgeloom.runtime.metrics.MetricFactory`)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edgeloom.api.status import Phase
from edgeloom.runtime.metrics import MetricFactory

RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


PHASES = tuple(p.value for p in Phase)
"""Every phase a resource reports, each a series per resource and a count per kind."""


@dataclass
class Outcome:
    """How a reconcile ended; a reconcile may mark itself ``invalid`` before raising."""

    value: str = "success"


class OperatorMetrics:
    """Reconciles, resources per phase, status reports and the worker-health loop."""

    def __init__(self, m: MetricFactory | None = None) -> None:
        self.factory = m = m or MetricFactory()
        self.reconciles = m.counter(
            "operator_reconciles_total", "Reconciles by kind and outcome.", ("kind", "outcome")
        )
        self.reconcile_duration = m.histogram(
            "operator_reconcile_duration_seconds",
            "Wall time of one reconcile (parse, render, apply, status).",
            ("kind",),
            buckets=RECONCILE_BUCKETS,
        )
        self.resources = m.gauge(
            "operator_resources", "Resources by kind and phase.", ("kind", "phase")
        )
        self.resource_phase = m.gauge(
            "operator_resource_phase",
            "1 for the phase each resource is in, 0 for the others (kube-state-metrics' "
            "kube_pod_status_phase); resource_namespace, since the scrape sets namespace to "
            "the operator's.",
            ("kind", "resource_namespace", "name", "uid", "phase"),
        )
        self.reports = m.counter(
            "operator_status_reports_total",
            "Status reports received over NATS, by kind and outcome (accepted, rejected).",
            ("kind", "outcome"),
        )
        self.health_checks = m.counter(
            "operator_health_checks_total",
            "Worker-health checks on Prometheus data, by kind and outcome.",
            ("kind", "outcome"),
        )
        self.worker_actions = m.counter(
            "operator_worker_actions_total",
            "Unhealthy workers handled, by kind and outcome (replaced, dropped, reported).",
            ("kind", "outcome"),
        )
        self._phases: dict[tuple[str, str, str], tuple[str, str]] = {}
        """(namespace, kind, name) -> (uid, phase)."""
        self._lock = threading.Lock()

    def initialize(self, kinds: Iterable[str]) -> None:
        """Create every counter series at 0, so ``increase()`` sees the first event (a series
        born at 1 shows no increase) and dashboards show the rate 0 instead of no data."""
        outcomes = {
            self.reconciles: ("success", "error", "invalid"),
            self.reports: ("accepted", "rejected"),
            self.health_checks: ("healthy", "unhealthy", "error", "skipped"),
            self.worker_actions: ("replaced", "dropped", "reported"),
        }
        for kind in kinds:
            for counter, values in outcomes.items():
                for outcome in values:
                    counter.labels(kind=kind, outcome=outcome)

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[Outcome]:
        """Count and time one reconcile; it is an ``error`` when it raises unless it said
        otherwise."""
        start = time.perf_counter()
        outcome = Outcome()
        try:
            yield outcome
        except BaseException:
            if outcome.value == "success":
                outcome.value = "error"
            raise
        finally:
            self.reconciles.labels(kind=kind, outcome=outcome.value).inc()
            self.reconcile_duration.labels(kind=kind).observe(time.perf_counter() - start)

    def phase(self, key: tuple[str, str, str], phase: str | None, uid: str = "") -> None:
        """Record the phase of one resource (None: it is gone), its per-phase series and the
        per-phase counts of its kind.

        Parameters
        ----------
        key
            ``(namespace, kind, name)`` of the resource.
        phase
            Its phase now; None removes its series.
        uid
            Its ``metadata.uid``: a namesake re-created under the same name is another run
            (the previous run's series are removed).
        """
        namespace, kind, name = key
        with self._lock:
            old = self._phases.pop(key, None)
            if phase is not None:
                self._phases[key] = (uid, phase)
            if old is not None and (phase is None or old[0] != uid):
                for each in PHASES:
                    self.resource_phase.remove(kind, namespace, name, old[0], each)
            if phase is not None:
                for each in PHASES:
                    series = self.resource_phase.labels(kind, namespace, name, uid, each)
                    series.set(1 if each == phase else 0)
            counts = Counter(p for (_, k, _), (_, p) in self._phases.items() if k == kind)
            for each in PHASES:
                self.resources.labels(kind=kind, phase=each).set(counts.get(each, 0))
