"""The reconcile loop every kind shares: parse → render → apply → report.

``register(KIND, render)`` wires kopf handlers for one kind: create/resume/spec-update apply
the rendered children; events on the children's Jobs and the job's own status reports
(:mod:`edgeloom_operators.reports`) refresh ``.status``. All Kubernetes calls go through
:class:`edgeloom_operators.kube.Kube`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import kopf
import nats
from pydantic import ValidationError

from edgeloom.api.kinds.splittraining import UnhealthyWorkerPolicy
from edgeloom.api.registry import KindInfo
from edgeloom.api.resource import InvalidResource, parse_resource
from edgeloom.api.status import Phase, set_condition
from edgeloom_operators import jetstream
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.control import drop_workers
from edgeloom_operators.kube import ApiError, Kube
from edgeloom_operators.metrics import OperatorMetrics
from edgeloom_operators.prometheus import Prometheus, PrometheusError
from edgeloom_operators.refresher import Key, Refresher
from edgeloom_operators.render import MANAGER, job_selector
from edgeloom_operators.status import TERMINAL, Health, derive_status, job_outcome
from edgeloom_operators.workers import (
    UNHEALTHY_ANNOTATION,
    Unhealthy,
    find_unhealthy,
    round_time_query,
    stale_query,
    worker_pods,
)

log = logging.getLogger(__name__)

GROUP, VERSION = "edgeloom.io", "v1alpha1"
FINALIZER = "edgeloom.io/run-state"
"""Held while a resource's JetStream state is deleted; released after CLEANUP_ATTEMPTS."""
CLEANUP_ATTEMPTS = 15
CLEANUP_DELAY_S = 2.0
ACTIVE = (Phase.RUNNING, Phase.DEGRADED)
"""Phases in which a resource's workers are checked."""

Render = Callable[[dict[str, Any], Any, OperatorConfig], list[dict[str, Any]]]
Cause = Literal["create", "resume", "update"]


@dataclass
class Operator:
    """State shared by the handlers: the API, the config, NATS, the jobs' latest reports."""

    kube: Kube
    config: OperatorConfig
    nc: nats.NATS
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    reports: dict[Key, dict[str, Any]] = field(default_factory=dict)
    health: dict[Key, Health] = field(default_factory=dict)
    """The latest worker-health verdict per resource (the WorkersHealthy condition)."""
    refresher: Refresher = field(init=False)
    prometheus: Prometheus | None = field(init=False)
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.refresher = Refresher(self._refresh_key)
        self.metrics.initialize(info.kind for info in KINDS.values())
        url = self.config.prometheus_url
        self.prometheus = Prometheus(url) if url else None

    def _refresh_key(self, key: Key) -> None:
        namespace, kind, name = key
        self.refresh(KINDS[kind.lower()], namespace, name)

    def lock(self, key: Key) -> threading.Lock:
        """The lock that serialises status writes of one resource (handler threads and the
        report flusher both write)."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, info: KindInfo, render: Render, body: dict[str, Any], cause: Cause) -> None:
        """Parse the spec, apply every child, then refresh the status.

        Raises
        ------
        kopf.PermanentError
            When the spec is invalid (status says ``InvalidSpec``; nothing is created).
        """
        with self.metrics.reconcile(info.kind) as outcome:
            try:
                resource = parse_resource(body, info.spec_model, info.kind)
            except InvalidResource as err:
                outcome.value = "invalid"
                self._invalid(info, body, str(err))
                raise kopf.PermanentError(f"invalid spec: {err}") from None
            self._apply(info, render, body, resource.spec, cause)

    def _apply(
        self, info: KindInfo, render: Render, body: dict[str, Any], spec: Any, cause: Cause
    ) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], info.kind, meta["name"])
        if cause == "create":
            self.reports.pop(key, None)  # a report of a deleted namesake is not this run's
        applied, jobs = [], []
        for child in render(body, spec, self.config):
            try:
                written = self.kube.apply(child)
            except ApiError as err:
                if not (child["kind"] == "Job" and _immutable(err)):
                    raise
                # a Job's pod template cannot change: its pods keep the spec they started with
                if cause == "update":
                    self.kube.event(
                        body,
                        "Warning",
                        "SpecChangeNotApplied",
                        f"Job {child['metadata']['name']} keeps its pods; delete and re-create "
                        "the resource to run the new spec",
                    )
                continue
            applied.append(f"{child['kind']}/{child['metadata']['name']}")
            if child["kind"] == "Job":
                jobs.append(written)
        if cause == "create":
            # nothing but this reconcile has written the new resource: no need to read it back
            self.refresh(info, meta["namespace"], meta["name"], body=body, jobs=jobs)
            self.kube.event(body, "Normal", "Created", "created " + ", ".join(applied))
        else:
            self.refresh(info, meta["namespace"], meta["name"])

    def _invalid(self, info: KindInfo, body: dict[str, Any], message: str) -> None:
        meta = body["metadata"]
        generation = meta.get("generation", 1)
        with self.lock((meta["namespace"], info.kind, meta["name"])):
            status = info.status_model.model_validate(body.get("status") or {})
            status.phase = Phase.FAILED
            status.observed_generation = generation
            status.conditions = set_condition(
                status.conditions, "Ready", "False", "InvalidSpec", message, generation
            )
            self.kube.patch_status(info, meta["namespace"], meta["name"], status.to_wire())
        self.kube.event(body, "Warning", "InvalidSpec", message)

    def refresh(
        self,
        info: KindInfo,
        namespace: str,
        name: str,
        body: dict[str, Any] | None = None,
        jobs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Recompute ``.status`` from the Jobs and the latest report; patch only on change.

        ``body`` and ``jobs`` skip reading them when the caller has just written them.
        """
        key = (namespace, info.kind, name)
        with self.lock(key):
            if body is None:
                body = self.kube.get_resource(info, namespace, name)
            if body is None:
                self.reports.pop(key, None)
                self.health.pop(key, None)
                self.metrics.phase(key, None)
                return
            current = body.get("status") or {}
            if jobs is None:
                jobs = self.kube.list("batch/v1", "Job", namespace, job_selector(info, name))
            report = self.reports.get(key)
            if job_outcome(jobs)[0] in TERMINAL and (report or {}).get("phase") not in TERMINAL:
                report = self._final_report(info, namespace, name) or report
            generation = body["metadata"].get("generation", 1)
            health = self.health.get(key)
            try:
                status = derive_status(info, generation, current, jobs, report, health=health)
            except ValidationError as err:
                log.warning("ignoring an invalid status report of %s/%s: %s", namespace, name, err)
                self.reports.pop(key, None)
                status = derive_status(info, generation, current, jobs, health=health)
            self.metrics.phase(key, status["phase"])
            if _same(info, status, current):
                return
            self.kube.patch_status(info, namespace, name, status)
            if status["phase"] != current.get("phase"):
                ready = next(c for c in status["conditions"] if c["type"] == "Ready")
                kind = "Warning" if status["phase"] == Phase.FAILED else "Normal"
                self.kube.event(body, kind, status["phase"], ready.get("message") or "")

    async def delete_run_state(self, body: dict[str, Any], retry: int) -> None:
        """Stop the job's pods, then delete the run's KV state and checkpoint.

        The Jobs go first (foreground), so no pod writes the state again after it is purged.
        After CLEANUP_ATTEMPTS tries the finalizer is released anyway, with a Warning event
        saying what may be left, so a NATS outage never blocks a deletion for long.
        """
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        info = KINDS[body["kind"].lower()]
        try:
            pods = await asyncio.to_thread(self.kube.stop_jobs, namespace, job_selector(info, name))
            if pods:
                raise kopf.TemporaryError(f"{pods} pods still stopping", delay=CLEANUP_DELAY_S)
            deleted = await jetstream.delete_run_state(self.nc, namespace, name, meta["uid"])
        except kopf.TemporaryError:
            if retry + 1 < CLEANUP_ATTEMPTS:
                raise
            err_text = "pods did not stop in time"
        except Exception as err:
            if retry + 1 < CLEANUP_ATTEMPTS:
                raise kopf.TemporaryError(f"cleanup failed: {err}", delay=CLEANUP_DELAY_S) from err
            err_text = str(err)
        else:
            if deleted:
                log.info("deleted %s", ", ".join(deleted))
            return
        await asyncio.to_thread(
            self.kube.event,
            body,
            "Warning",
            "CleanupAbandoned",
            f"run state may remain in JetStream after {CLEANUP_ATTEMPTS} attempts: {err_text}",
        )

    async def check_workers(self, info: KindInfo, body: dict[str, Any]) -> None:
        """One worker-health check of a running resource (:mod:`edgeloom_operators.workers`):
        find unhealthy workers on Prometheus data and handle each per
        ``participation.onUnhealthyWorker``; the verdict goes into WorkersHealthy."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        key = (namespace, info.kind, name)
        if (body.get("status") or {}).get("phase") not in ACTIVE:
            return
        if self.prometheus is None:
            self.metrics.health_checks.labels(kind=info.kind, outcome="skipped").inc()
            message = "no Prometheus is configured (chart value prometheus.url): not checked"
            self._set_health(key, ("Unknown", "PrometheusNotConfigured", message))
            return
        participation = parse_resource(body, info.spec_model, info.kind).spec.participation
        window = participation.unhealthy_after_seconds
        selector = job_selector(info, name) + ",edgeloom.io/role=worker"
        pods = await asyncio.to_thread(self.kube.list, "v1", "Pod", namespace, selector)
        workers = worker_pods(pods, datetime.now(UTC))
        if not workers:
            return
        try:
            stale = await asyncio.to_thread(
                self.prometheus.query, stale_query(namespace, workers, window)
            )
            times = await asyncio.to_thread(
                self.prometheus.query, round_time_query(namespace, name, window)
            )
        except PrometheusError as err:
            self.metrics.health_checks.labels(kind=info.kind, outcome="error").inc()
            self._set_health(key, ("Unknown", "PrometheusUnavailable", str(err)))
            return
        verdicts = find_unhealthy(workers, stale, times, window, participation.straggler_factor)
        outcome = "unhealthy" if verdicts else "healthy"
        self.metrics.health_checks.labels(kind=info.kind, outcome=outcome).inc()
        if not verdicts:
            message = f"{len(workers)} running workers checked"
            self._set_health(key, ("True", "WorkersHealthy", message))
            return
        policy = participation.on_unhealthy_worker
        done = [await self._handle_unhealthy(info, body, v, policy) for v in verdicts]
        self._set_health(key, ("False", verdicts[0].reason, "; ".join(done)))

    async def _handle_unhealthy(
        self, info: KindInfo, body: dict[str, Any], verdict: Unhealthy, policy: str
    ) -> str:
        """Mark, report and replace or drop one unhealthy worker; returns what was done."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        pod = verdict.worker.name
        what = f"worker {verdict.worker.index} (pod {pod}): {verdict.detail}"
        if verdict.worker.marked and policy == UnhealthyWorkerPolicy.REPORT:
            return f"{what}; reported"  # once per pod
        await asyncio.to_thread(
            self.kube.annotate_pod,
            namespace,
            pod,
            {UNHEALTHY_ANNOTATION: f"{verdict.reason}: {verdict.detail}"},
        )
        if policy == UnhealthyWorkerPolicy.DROP:
            dropped = await drop_workers(
                self.nc, info, namespace, name, [verdict.worker.index], verdict.detail
            )
            action = f"dropped from the job (dropped so far: {dropped}), pod deleted"
        elif policy == UnhealthyWorkerPolicy.REPLACE:
            action = "pod deleted, its Job starts a replacement"
        else:
            action = "reported only (participation.onUnhealthyWorker: report)"
        if policy != UnhealthyWorkerPolicy.REPORT:
            await asyncio.to_thread(self.kube.delete_pod, namespace, pod)
        outcome = {"replace": "replaced", "drop": "dropped", "report": "reported"}[policy]
        self.metrics.worker_actions.labels(kind=info.kind, outcome=outcome).inc()
        await asyncio.to_thread(
            self.kube.event, body, "Warning", "WorkerUnhealthy", f"{what}; {action}"
        )
        return f"{what}; {action}"

    def _set_health(self, key: Key, health: Health) -> None:
        if self.health.get(key) != health:
            self.health[key] = health
            self.refresher.request(key)

    def _final_report(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """The last status a coordinating pod wrote as its termination message: from the pod
        that finished last, so an earlier failed attempt does not speak for a retry."""
        pods = self.kube.list("v1", "Pod", namespace, job_selector(info, name))
        essential = {r.name for r in info.roles if r.essential}
        finished = []
        for pod in pods:
            if pod["metadata"]["labels"].get("edgeloom.io/role") not in essential:
                continue
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated")
                if terminated:
                    finished.append((str(terminated.get("finishedAt") or ""), terminated))
        for _, terminated in sorted(finished, key=lambda item: item[0], reverse=True):
            try:
                report = json.loads(terminated.get("message") or "")
            except ValueError:
                continue  # logs (FallbackToLogsOnError), not a status
            if isinstance(report, dict) and report.get("phase") in TERMINAL:
                return report
        return None


def _immutable(err: ApiError) -> bool:
    return err.status == 422 and "field is immutable" in str(err.body)


def _same(info: KindInfo, new: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether patching ``new`` would change nothing, compared as validated models (the API
    server may send 1.0 back as 1)."""
    try:
        return info.status_model.model_validate(current) == info.status_model.model_validate(new)
    except ValidationError:
        return False


OPERATOR: Operator | None = None
KINDS: dict[str, KindInfo] = {}
"""Registered kinds by their lower-case name (the ``edgeloom.io/kind`` label and subject)."""


def operator() -> Operator:
    """The running operator's state (set by ``main.startup``)."""
    if OPERATOR is None:
        raise RuntimeError("the operator has not started")
    return OPERATOR


def register(
    info: KindInfo, render: Render, keeps_run_state: bool = False, has_workers: bool = False
) -> None:
    """Wire kopf handlers for one kind; ``keeps_run_state`` adds the JetStream cleanup on
    deletion (and with it kopf's finalizer), ``has_workers`` the worker-health daemon."""
    KINDS[info.singular] = info

    def handler(cause: Cause) -> Callable[..., None]:
        def reconcile(body: kopf.Body, **_: Any) -> None:
            operator().reconcile(info, render, _plain(body), cause)

        return reconcile

    kopf.on.create(GROUP, VERSION, info.plural, id="reconcile")(handler("create"))
    kopf.on.resume(GROUP, VERSION, info.plural, id="reconcile-on-resume")(handler("resume"))
    kopf.on.update(GROUP, VERSION, info.plural, field="spec", id="reconcile-on-update")(
        handler("update")
    )
    if keeps_run_state:

        @kopf.on.delete(GROUP, VERSION, info.plural, retries=CLEANUP_ATTEMPTS, id="run-state")
        async def delete_run_state(body: kopf.Body, retry: int, **_: Any) -> None:
            await operator().delete_run_state(_plain(body), retry)

    if has_workers:

        @kopf.daemon(
            GROUP,
            VERSION,
            info.plural,
            id="worker-health",
            when=lambda status, **_: status.get("phase") in ACTIVE,
            cancellation_timeout=5.0,
        )
        async def watch_workers(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
            """Check the workers every health interval while the resource is running."""
            op = operator()
            while not stopped:
                try:
                    await op.check_workers(info, _plain(body))  # body: kopf's live view
                except Exception:  # one failed check (API, NATS) must not end the loop
                    log.exception("worker-health check of %s failed", body.metadata.name)
                await stopped.wait(op.config.health_interval_s)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGER})
async def on_job_event(body: kopf.Body, **_: Any) -> None:
    """A child Job changed: ask for a (coalesced) refresh of its resource's status."""
    labels = body.metadata.labels
    info = KINDS.get(labels.get("edgeloom.io/kind", ""))
    name = labels.get("edgeloom.io/job")
    if info is not None and name and OPERATOR is not None:
        OPERATOR.refresher.request((body.metadata.namespace, info.kind, name))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return json.loads(json.dumps(dict(body)))
