"""The SplitTrainingJob plugin: job semantics, the run's JetStream state deleted with the
resource, and the worker-health loop (:mod:`edgeloom_operators.splittraining.health`) that
replaces, drops or reports unhealthy workers per ``participation.onUnhealthyWorker``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edgeloom.api.kinds.splittraining import KIND, SplitTrainingJobSpec, UnhealthyWorkerPolicy
from edgeloom.api.resource import parse_resource
from edgeloom.api.status import Phase
from edgeloom_operators import jetstream
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.control import drop_workers
from edgeloom_operators.dashboards.panels import KindDashboard
from edgeloom_operators.dashboards.splittrainingjob import DASHBOARD
from edgeloom_operators.plugin import JobPlugin, KindPlugin, Loop
from edgeloom_operators.prometheus import PrometheusError
from edgeloom_operators.render import children, job_selector
from edgeloom_operators.splittraining.health import (
    HEALTH,
    UNHEALTHY_ANNOTATION,
    Unhealthy,
    find_unhealthy,
    round_time_query,
    stale_query,
    worker_pods,
)
from edgeloom_operators.splittraining.render import role_jobs

if TYPE_CHECKING:
    from edgeloom_operators.handlers import Operator

ACTIVE = (Phase.RUNNING, Phase.DEGRADED)
"""Phases in which a job's workers are checked."""
OUTCOMES = {
    UnhealthyWorkerPolicy.REPLACE: "replaced",
    UnhealthyWorkerPolicy.DROP: "dropped",
    UnhealthyWorkerPolicy.REPORT: "reported",
}


class SplitTrainingPlugin(JobPlugin):
    """A server Job on a cloud node and one Indexed Job per worker group on edge nodes."""

    info = KIND
    owned_conditions = (HEALTH,)
    external_state = True
    """The server's KV state and checkpoints (the job's buckets) are deleted with it."""

    def render(
        self, body: dict[str, Any], spec: SplitTrainingJobSpec, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        return children(body, KIND, role_jobs(spec), config)

    async def cleanup(self, operator: Operator, body: dict[str, Any]) -> list[str]:
        meta = body["metadata"]
        return await jetstream.delete_job_state(
            operator.nc, meta["namespace"], KIND.kind, meta["name"]
        )

    def dashboard(self) -> KindDashboard:
        return DASHBOARD

    def loops(self) -> tuple[Loop, ...]:
        return (Loop("worker-health", check_workers, ACTIVE, lambda c: c.health_interval_s),)


async def check_workers(operator: Operator, plugin: KindPlugin, body: dict[str, Any]) -> None:
    """One worker-health check of a running job: find unhealthy workers on Prometheus data
    and handle each per ``participation.onUnhealthyWorker``; the verdict goes into
    WorkersHealthy."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, KIND.kind, name)
    if (body.get("status") or {}).get("phase") not in ACTIVE:
        return
    checks = operator.metrics.health_checks
    if operator.prometheus is None:
        checks.labels(kind=KIND.kind, outcome="skipped").inc()
        message = "no Prometheus is configured (chart value prometheus.url): not checked"
        operator.set_verdict(key, HEALTH, ("Unknown", "PrometheusNotConfigured", message))
        return
    spec = parse_resource(body, SplitTrainingJobSpec, KIND.kind).spec
    participation = spec.participation
    window = participation.unhealthy_after_seconds
    selector = job_selector(KIND, name) + ",edgeloom.io/role=worker"
    pods = await asyncio.to_thread(operator.kube.list, "v1", "Pod", namespace, selector)
    workers = worker_pods(pods, datetime.now(UTC))
    if not workers:
        return
    try:
        query = operator.prometheus.query
        stale = await asyncio.to_thread(query, stale_query(namespace, workers, window))
        times = await asyncio.to_thread(query, round_time_query(namespace, name, window))
    except PrometheusError as err:
        checks.labels(kind=KIND.kind, outcome="error").inc()
        operator.set_verdict(key, HEALTH, ("Unknown", "PrometheusUnavailable", str(err)))
        return
    verdicts = find_unhealthy(workers, stale, times, window, participation.straggler_factor)
    checks.labels(kind=KIND.kind, outcome="unhealthy" if verdicts else "healthy").inc()
    if not verdicts:
        message = f"{len(workers)} running workers checked"
        operator.set_verdict(key, HEALTH, ("True", "WorkersHealthy", message))
        return
    policy = participation.on_unhealthy_worker
    done = [await _handle_unhealthy(operator, body, v, policy) for v in verdicts]
    operator.set_verdict(key, HEALTH, ("False", verdicts[0].reason, "; ".join(done)))


async def _handle_unhealthy(
    operator: Operator, body: dict[str, Any], verdict: Unhealthy, policy: UnhealthyWorkerPolicy
) -> str:
    """Mark, report and replace or drop one unhealthy worker; returns what was done."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    kube = operator.kube
    pod = verdict.worker.name
    what = f"worker {verdict.worker.index} (pod {pod}): {verdict.detail}"
    if verdict.worker.marked and policy == UnhealthyWorkerPolicy.REPORT:
        return f"{what}; reported"  # once per pod
    mark = {UNHEALTHY_ANNOTATION: f"{verdict.reason}: {verdict.detail}"}
    await asyncio.to_thread(kube.annotate_pod, namespace, pod, mark)
    if policy == UnhealthyWorkerPolicy.DROP:
        dropped = await drop_workers(
            operator.nc, KIND, namespace, name, [verdict.worker.index], verdict.detail
        )
        action = f"dropped from the job (dropped so far: {dropped}), pod deleted"
    elif policy == UnhealthyWorkerPolicy.REPLACE:
        action = "pod deleted, its Job starts a replacement"
    else:
        action = "reported only (participation.onUnhealthyWorker: report)"
    if policy != UnhealthyWorkerPolicy.REPORT:
        await asyncio.to_thread(kube.delete_pod, namespace, pod)
    operator.metrics.worker_actions.labels(kind=KIND.kind, outcome=OUTCOMES[policy]).inc()
    await asyncio.to_thread(kube.event, body, "Warning", "WorkerUnhealthy", f"{what}; {action}")
    return f"{what}; {action}"
