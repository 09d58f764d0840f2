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
from typing import Any

import kopf
import nats
from pydantic import ValidationError

from edgeloom.api.registry import KindInfo
from edgeloom.api.resource import InvalidResource, parse_resource
from edgeloom.api.status import Phase, set_condition
from edgeloom_operators import jetstream
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.kube import ApiError, Kube
from edgeloom_operators.render import MANAGER, job_selector
from edgeloom_operators.status import TERMINAL, derive_status, is_essential

log = logging.getLogger(__name__)

GROUP, VERSION = "edgeloom.io", "v1alpha1"
FINALIZER = "edgeloom.io/run-state"
"""Held while a resource's JetStream state is deleted; released after CLEANUP_ATTEMPTS."""
CLEANUP_ATTEMPTS = 5

Render = Callable[[dict[str, Any], Any, OperatorConfig], list[dict[str, Any]]]
Key = tuple[str, str, str]
"""(namespace, kind, name) of a resource."""


@dataclass
class Operator:
    """State shared by the handlers: the API, the config, the jobs' latest reports."""

    kube: Kube
    config: OperatorConfig
    nc: nats.NATS
    reports: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, info: KindInfo, render: Render, body: dict[str, Any]) -> None:
        """Parse the spec, apply every child, then refresh the status."""
        meta = body["metadata"]
        try:
            resource = parse_resource(body, info.spec_model, info.kind)
        except InvalidResource as err:
            self._invalid(info, body, str(err))
            raise kopf.PermanentError(f"invalid spec: {err}") from None
        first = not (body.get("status") or {}).get("phase")
        applied = []
        for child in render(body, resource.spec, self.config):
            try:
                self.kube.apply(child)
            except ApiError as err:
                if err.status != 422 or child["kind"] != "Job":
                    raise
                # a running Job's pod template is immutable: the change applies to new runs
                self.kube.event(
                    body,
                    "Warning",
                    "SpecChangeNotApplied",
                    f"Job {child['metadata']['name']} keeps its pods: {_reason(err)}",
                )
                continue
            applied.append(f"{child['kind']}/{child['metadata']['name']}")
        if first:
            self.kube.event(body, "Normal", "Created", "created " + ", ".join(applied))
        self.refresh(info, meta["namespace"], meta["name"])

    def _invalid(self, info: KindInfo, body: dict[str, Any], message: str) -> None:
        meta = body["metadata"]
        generation = meta.get("generation", 1)
        status = info.status_model.model_validate(body.get("status") or {})
        status.phase = Phase.FAILED
        status.observed_generation = generation
        status.conditions = set_condition(
            status.conditions, "Ready", "False", "InvalidSpec", message, generation
        )
        self.kube.patch_status(info, meta["namespace"], meta["name"], status.to_wire())
        self.kube.event(body, "Warning", "InvalidSpec", message)

    def refresh(self, info: KindInfo, namespace: str, name: str) -> None:
        """Recompute ``.status`` from the Jobs and the latest report; patch only on change."""
        key = (namespace, info.kind, name)
        with self.lock(key):
            body = self.kube.get_resource(info, namespace, name)
            if body is None:
                self.reports.pop(key, None)
                return
            current = body.get("status") or {}
            if (current.get("conditions") or []) and _invalid_spec(current, body):
                return  # stays failed until the spec changes
            jobs = self.kube.list("batch/v1", "Job", namespace, job_selector(info, name))
            report = self.reports.get(key)
            if _terminal_jobs(jobs) and (report is None or report.get("phase") not in TERMINAL):
                report = self._final_report(info, namespace, name) or report
            generation = body["metadata"].get("generation", 1)
            try:
                status = derive_status(info, generation, current, jobs, report)
            except ValidationError as err:
                log.warning("ignoring an invalid status report of %s/%s: %s", namespace, name, err)
                self.reports.pop(key, None)
                status = derive_status(info, generation, current, jobs)
            if _same(status, current):
                return
            self.kube.patch_status(info, namespace, name, status)
            if status["phase"] != current.get("phase"):
                ready = next(c for c in status["conditions"] if c["type"] == "Ready")
                kind = "Warning" if status["phase"] == Phase.FAILED else "Normal"
                self.kube.event(body, kind, status["phase"], ready.get("message") or "")

    async def delete_run_state(self, body: dict[str, Any], retry: int) -> None:
        """Delete the run's KV state and checkpoint; after CLEANUP_ATTEMPTS failures give up
        (a Warning event says what may be left) so the deletion is never blocked for long."""
        meta = body["metadata"]
        try:
            deleted = await jetstream.delete_run_state(
                self.nc, meta["namespace"], meta["name"], meta["uid"]
            )
        except Exception as err:
            if retry + 1 < CLEANUP_ATTEMPTS:
                raise kopf.TemporaryError(f"JetStream cleanup failed: {err}", delay=2) from err
            await asyncio.to_thread(
                self.kube.event,
                body,
                "Warning",
                "CleanupAbandoned",
                f"run state may remain in JetStream after {CLEANUP_ATTEMPTS} attempts: {err}",
            )
            return
        if deleted:
            log.info("deleted %s", ", ".join(deleted))

    def _final_report(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """The last status a coordinating pod wrote as its termination message, if any."""
        pods = self.kube.list("v1", "Pod", namespace, job_selector(info, name))
        essential = {r.name for r in info.roles if r.essential}
        for pod in pods:
            if pod["metadata"]["labels"].get("edgeloom.io/role") not in essential:
                continue
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated") or {}
                try:
                    report = json.loads(terminated.get("message") or "")
                except ValueError:
                    continue  # logs (FallbackToLogsOnError), not a status
                if isinstance(report, dict) and report.get("phase") in TERMINAL:
                    return report
        return None


def _reason(err: ApiError) -> str:
    try:
        return json.loads(err.body).get("message", err.reason)
    except (TypeError, ValueError):
        return str(err.reason)


def _invalid_spec(current: dict[str, Any], body: dict[str, Any]) -> bool:
    ready = next((c for c in current["conditions"] if c.get("type") == "Ready"), {})
    generation = body["metadata"].get("generation", 1)
    return ready.get("reason") == "InvalidSpec" and current.get("observedGeneration") == generation


def _terminal_jobs(jobs: list[dict[str, Any]]) -> bool:
    essential = [j for j in jobs if is_essential(j)]
    return bool(essential) and all(
        any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (j.get("status") or {}).get("conditions") or []
        )
        for j in essential
    )


def _same(new: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether patching ``new`` would change nothing (the API server drops nulls)."""
    return json.dumps(new, sort_keys=True, default=str) == json.dumps(
        current, sort_keys=True, default=str
    )


OPERATOR: Operator | None = None
KINDS: dict[str, KindInfo] = {}
"""Registered kinds by their lower-case name (the ``edgeloom.io/kind`` label and subject)."""


def operator() -> Operator:
    if OPERATOR is None:
        raise RuntimeError("the operator has not started")
    return OPERATOR


def register(info: KindInfo, render: Render, keeps_run_state: bool = False) -> None:
    """Wire kopf handlers for one kind; ``keeps_run_state`` adds the JetStream cleanup on
    deletion (and with it kopf's finalizer)."""
    KINDS[info.singular] = info

    @kopf.on.resume(GROUP, VERSION, info.plural)
    @kopf.on.create(GROUP, VERSION, info.plural)
    @kopf.on.update(GROUP, VERSION, info.plural, field="spec")
    def reconcile(body: kopf.Body, **_: Any) -> None:
        operator().reconcile(info, render, _plain(body))

    if keeps_run_state:

        @kopf.on.delete(GROUP, VERSION, info.plural, retries=CLEANUP_ATTEMPTS, backoff=2)
        async def delete_run_state(body: kopf.Body, retry: int, **_: Any) -> None:
            await operator().delete_run_state(_plain(body), retry)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGER})
def on_job_event(body: kopf.Body, **_: Any) -> None:
    labels = body.metadata.labels
    info = KINDS.get(labels.get("edgeloom.io/kind", ""))
    if info is not None and OPERATOR is not None:
        OPERATOR.refresh(info, body.metadata.namespace, labels["edgeloom.io/job"])


def _plain(body: kopf.Body) -> dict[str, Any]:
    return json.loads(json.dumps(dict(body)))
