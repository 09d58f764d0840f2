"""The reconcile loop every kind shares: parse → render → apply → report, over kind plugins.

:func:`register` wires kopf handlers for a set of :class:`~edgeloom_operators.plugin.KindPlugin`
on a given ``kopf.OperatorRegistry``: create/resume/spec-update apply the rendered children;
events on the children the plugin observes and the resource's own status reports
(:mod:`edgeloom_operators.reports`) refresh ``.status``; a plugin with external state gets the
finalizer that waits on its ``cleanup``; each of its loops becomes a kopf daemon. The
:class:`Operator` is created by the registered startup handler and reached through the
:class:`OperatorSlot` :func:`register` returns; nothing here is a module global. All
Kubernetes calls go through :class:`edgeloom_operators.kube.Kube`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import kopf
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from edgeloom.api.registry import KindInfo
from edgeloom.api.resource import GROUP, VERSION, InvalidResource, Resource, parse_resource
from edgeloom.api.status import READY, Phase, set_summary_conditions
from edgeloom.runtime.natsauth import Issuer
from edgeloom_operators import credentials, jetstream
from edgeloom_operators.config import OperatorConfig, redact
from edgeloom_operators.jetstream import NatsLink, NatsUnavailable
from edgeloom_operators.kube import Immutable, Kube, connect
from edgeloom_operators.metrics import OperatorMetrics
from edgeloom_operators.plugin import Children, ChildType, KindPlugin, Loop, index
from edgeloom_operators.prometheus import Prometheus
from edgeloom_operators.readiness import Readiness
from edgeloom_operators.refresher import Key, Refresher
from edgeloom_operators.render import MANAGER, child_name, job_selector, nats_secret
from edgeloom_operators.reports import ReportListener
from edgeloom_operators.status import INVALID_SPEC, Verdict, derive_status

log = logging.getLogger(__name__)

FINALIZER = "edgeloom.io/run-state"
"""Held while a resource's external state is deleted; released after CLEANUP_ATTEMPTS."""
CLEANUP_ATTEMPTS = 15
CLEANUP_DELAY_S = 2.0
CREDENTIALS_CHECK_S = 3600.0
"""How often each resource's NATS credentials are checked for renewal."""

Cause = Literal["create", "resume", "update"]


@dataclass
class Operator:
    """State shared by the handlers: the API, the config, the plugins by singular kind name,
    NATS, the operator's readiness, the resources' latest reports and the verdicts of their
    loops."""

    kube: Kube
    config: OperatorConfig
    plugins: Mapping[str, KindPlugin]
    issuer: Issuer | None = None
    """Signs each job's NATS credentials; None: NATS without auth."""
    link: NatsLink | None = None
    """The connection to NATS, made by :meth:`connect_nats`."""
    readiness: Readiness = field(default_factory=Readiness)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    reports: dict[Key, dict[str, Any]] = field(default_factory=dict)
    verdicts: dict[Key, dict[str, Verdict]] = field(default_factory=dict)
    """The latest verdict of each operator-owned condition per resource (WorkersHealthy...)."""
    refresher: Refresher = field(init=False)
    prometheus: Prometheus | None = field(init=False)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks that live as long as the operator (its own credentials' renewal)."""
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _nats_failed: bool = False

    def __post_init__(self) -> None:
        self.refresher = Refresher(self._refresh_key)
        self.metrics.initialize(p.info.kind for p in self.plugins.values())
        url = self.config.prometheus_url
        self.prometheus = Prometheus(url) if url else None

    @property
    def nc(self) -> NATS:
        """The connected NATS client.

        Raises
        ------
        NatsUnavailable
            While NATS cannot be reached (a cleanup retries, a loop skips its check).
        """
        if self.link is None:
            raise NatsUnavailable(self.readiness.state[1])
        return self.link.client

    async def connect_nats(self, creds: jetstream.OperatorCreds | None) -> None:
        """Reach NATS, however long it takes (:class:`~edgeloom_operators.jetstream.NatsLink`),
        then listen to the jobs' status reports; readiness follows the connection from then
        on."""
        self.link = NatsLink(self.config, creds, self._nats_state)
        try:
            nc = await self.link.connect()
        except NatsUnavailable:  # a URL no attempt can use: logged, and readiness says so
            return
        kinds = {singular: plugin.info for singular, plugin in self.plugins.items()}
        await ReportListener(nc, kinds, self.accept_report, self.metrics).start()
        await self._nats_state(True, self.link.reason)

    async def _nats_state(self, connected: bool, reason: str) -> None:
        """Readiness says where NATS stands; the operator's Pod gets a Warning event
        ``NatsUnreachable`` for each new reason NATS cannot be reached, and ``NatsConnected``
        once it is back (what ``kubectl describe pod`` shows)."""
        if self.readiness.state == (connected, reason):
            return
        self.readiness.set(connected, reason)
        if connected and not self._nats_failed:
            return
        self._nats_failed = not connected
        pod = self._own_pod()
        if pod is not None:
            kind, why = ("Normal", "NatsConnected") if connected else ("Warning", "NatsUnreachable")
            await asyncio.to_thread(self.kube.event, pod, kind, why, reason)

    def _own_pod(self) -> dict[str, Any] | None:
        """The operator's Pod as an event's subject, when its downward-API env names it."""
        config = self.config
        if config.pod_name is None or config.pod_uid is None:
            return None
        meta = {"name": config.pod_name, "namespace": config.namespace, "uid": config.pod_uid}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}

    def _refresh_key(self, key: Key) -> None:
        namespace, kind, name = key
        self.refresh(self.plugins[kind.lower()], namespace, name)

    def lock(self, key: Key) -> threading.Lock:
        """The lock that serialises status writes of one resource (handler threads and the
        report flusher both write)."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def accept_report(self, key: Key, report: dict[str, Any]) -> None:
        """Keep a resource's latest (validated) report and ask for a coalesced refresh."""
        self.reports[key] = report
        self.refresher.request(key)

    def set_verdict(self, key: Key, type: str, verdict: Verdict) -> None:
        """A loop's verdict on condition ``type`` of one resource; refreshes it on change
        (call from the event loop's thread)."""
        verdicts = self.verdicts.setdefault(key, {})
        if verdicts.get(type) != verdict:
            verdicts[type] = verdict
            self.refresher.request(key)

    def reconcile(self, plugin: KindPlugin, body: dict[str, Any], cause: Cause) -> None:
        """Parse the spec, apply every child, then refresh the status.

        Raises
        ------
        kopf.PermanentError
            When the spec is invalid (status says ``InvalidSpec``; nothing is created).
        """
        info = plugin.info
        with self.metrics.reconcile(info.kind) as outcome:
            try:
                resource: Resource[Any] = parse_resource(body, info.spec_model, info.kind)
            except InvalidResource as err:
                outcome.value = "invalid"
                self._invalid(info, body, str(err))
                raise kopf.PermanentError(f"invalid spec: {err}") from None
            self._apply(plugin, body, resource.spec, cause)

    def _apply(self, plugin: KindPlugin, body: dict[str, Any], spec: Any, cause: Cause) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], plugin.info.kind, meta["name"])
        if cause == "create":
            self.reports.pop(key, None)  # a report of a deleted namesake is not this run's
        applied: list[str] = []
        if self._ensure_credentials(plugin.info, body, spec):
            applied.append(f"Secret/{child_name(meta['name'], 'nats')}")
        for child in plugin.render(body, spec, self.config):
            what = f"{child['kind']} {child['metadata']['name']}"
            try:
                self.kube.apply(child)
            except Immutable as err:
                # e.g. a Job's pod template: its pods keep the spec they started with
                if cause == "update":
                    fields = ", ".join(err.fields) or "immutable fields"
                    self.kube.event(
                        body,
                        "Warning",
                        "SpecChangeNotApplied",
                        f"{what} keeps its {fields}; delete and re-create the resource to run "
                        "the new spec",
                    )
                continue
            applied.append(f"{child['kind']}/{child['metadata']['name']}")
        # read back, never from ``body``: a child's event may have refreshed the status (to
        # Running) while the children were written, and a stale Pending must not overwrite it
        self.refresh(plugin, meta["namespace"], meta["name"])
        if cause == "create":
            self.kube.event(body, "Normal", "Created", "created " + ", ".join(applied))

    def renew_credentials(self, plugin: KindPlugin, body: dict[str, Any]) -> None:
        """The periodic check: write new credentials when the job's are near expiry."""
        info = plugin.info
        try:
            spec: Any = parse_resource(body, info.spec_model, info.kind).spec
        except InvalidResource:
            return  # an invalid resource has no pods to connect
        if self._ensure_credentials(info, body, spec):
            self.kube.event(body, "Normal", "CredentialsRenewed", "minted new NATS credentials")

    def _ensure_credentials(self, info: KindInfo, body: dict[str, Any], spec: Any) -> bool:
        """Write the job's NATS Secret (URL, CA, a user per role) unless the one there can be
        kept (:func:`~edgeloom_operators.credentials.still_valid`); True when written."""
        meta = body["metadata"]
        name = child_name(meta["name"], "nats")
        lifetime = self.config.credential_lifetime_s
        if self.issuer is None:
            creds: dict[str, str] = {}
        else:
            existing = self.kube.get_secret(meta["namespace"], name)
            if credentials.still_valid(existing, info, meta["uid"], lifetime):
                return False
            creds = credentials.mint(self.issuer, info, body, spec, lifetime)
        self.kube.apply(nats_secret(body, info, self.config, creds))
        return True

    def _invalid(self, info: KindInfo, body: dict[str, Any], message: str) -> None:
        meta = body["metadata"]
        generation = meta.get("generation", 1)
        with self.lock((meta["namespace"], info.kind, meta["name"])):
            status = info.status_model.model_validate(body.get("status") or {})
            status.phase = Phase.FAILED
            status.observed_generation = generation
            status.conditions = set_summary_conditions(
                status.conditions, Phase.FAILED, False, INVALID_SPEC, message, generation
            )
            self.kube.patch_status(info, meta["namespace"], meta["name"], status.to_wire())
        self.kube.event(body, "Warning", INVALID_SPEC, message)

    def refresh(self, plugin: KindPlugin, namespace: str, name: str) -> None:
        """Recompute ``.status`` from the observed children and the latest report; patch only
        on change.

        A resource being deleted keeps the status it had: its children going away (and the
        generation the API server bumps with the deletionTimestamp) are not a new run.
        """
        info = plugin.info
        key = (namespace, info.kind, name)
        with self.lock(key):
            body = self.kube.get_resource(info, namespace, name)
            if body is None:
                self._forget(key)
                return
            if body["metadata"].get("deletionTimestamp"):
                return
            current = body.get("status") or {}
            selector = job_selector(info, name)
            children: Children = {
                t.kind: self.kube.list(t.api_version, t.kind, namespace, selector)
                for t in plugin.observes
            }
            outcome = plugin.outcome(children)
            report = self.reports.get(key)
            terminal = plugin.semantics.terminal
            if outcome.phase in terminal and (report or {}).get("phase") != outcome.phase:
                # the pod's own last word, where NATS brought none (or another, maybe forged)
                report = self._final_report(info, namespace, name) or report
            generation = body["metadata"].get("generation", 1)
            verdicts = self.verdicts.get(key)
            try:
                status = derive_status(plugin, generation, current, outcome, report, None, verdicts)
            except ValidationError as err:
                log.warning("ignoring an invalid status report of %s/%s: %s", namespace, name, err)
                self.reports.pop(key, None)
                status = derive_status(plugin, generation, current, outcome, verdicts=verdicts)
            self.metrics.phase(key, status["phase"], body["metadata"]["uid"])
            if _same(info, status, current):
                return
            self.kube.patch_status(info, namespace, name, status)
            if status["phase"] != current.get("phase"):
                ready = next(c for c in status["conditions"] if c["type"] == READY)
                kind = "Warning" if status["phase"] in (Phase.FAILED, Phase.DEGRADED) else "Normal"
                self.kube.event(body, kind, status["phase"], ready.get("message") or "")

    def forget(self, info: KindInfo, namespace: str, name: str) -> None:
        """The resource is gone from the API: drop its report, verdicts and metric series
        (no child event may follow its deletion to refresh it, e.g. after the finalizer)."""
        key = (namespace, info.kind, name)
        with self.lock(key):
            self._forget(key)

    def _forget(self, key: Key) -> None:
        self.reports.pop(key, None)
        self.verdicts.pop(key, None)
        self.metrics.phase(key, None)

    async def finalize(self, plugin: KindPlugin, body: dict[str, Any], retry: int) -> None:
        """Stop the resource's pods, then delete its external state (``plugin.cleanup``).

        The observed children go first (foreground), so no pod writes the state again after
        it is deleted. After CLEANUP_ATTEMPTS tries the finalizer is released anyway, with a
        Warning event saying what may be left, so a NATS outage never blocks a deletion for
        long.
        """
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        kinds = [(t.api_version, t.kind) for t in plugin.observes]
        selector = job_selector(plugin.info, name)
        try:
            pods = await asyncio.to_thread(self.kube.stop, kinds, namespace, selector)
            if pods:
                raise kopf.TemporaryError(f"{pods} pods still stopping", delay=CLEANUP_DELAY_S)
            deleted = await plugin.cleanup(self, body)
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
            f"run state may remain outside Kubernetes after {CLEANUP_ATTEMPTS} attempts: "
            f"{err_text}",
        )

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
            if isinstance(report, dict) and report.get("phase") in (
                Phase.SUCCEEDED,
                Phase.FAILED,
            ):
                return report
        return None


def _same(info: KindInfo, new: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether patching ``new`` would change nothing, compared as validated models (the API
    server may send 1.0 back as 1)."""
    try:
        return info.status_model.model_validate(current) == info.status_model.model_validate(new)
    except ValidationError:
        return False


class OperatorSlot:
    """Where the registered startup handler puts the :class:`Operator` it creates; every
    handler :func:`register` wires reads it from here."""

    def __init__(self) -> None:
        self.current: Operator | None = None

    def get(self) -> Operator:
        """The running operator."""
        if self.current is None:
            raise RuntimeError("the operator has not started")
        return self.current


Start = Callable[[Mapping[str, KindPlugin]], Awaitable[Operator]]
"""Creates and starts the :class:`Operator` of the given plugins (at kopf's startup)."""


async def start_operator(plugins: Mapping[str, KindPlugin]) -> Operator:
    """The operator from its environment (:meth:`OperatorConfig.from_env`): the API client,
    its ``/readyz`` and ``/metrics``, the refresher, and NATS with the status-report listener
    in the background, so the operator reconciles (and kopf answers ``/healthz``) while NATS
    is still out of reach."""
    config = OperatorConfig.from_env()
    kube = Kube(connect())
    issuer = None
    if config.authority_secret is not None:
        issuer = credentials.load_issuer(
            kube, config.authority_namespace, config.authority_secret, config.create_authority
        )
    own = None if issuer is None else jetstream.OperatorCreds(issuer, config.credential_lifetime_s)
    waiting = Readiness(f"connecting to NATS at {redact(config.nats_url)}")
    op = Operator(kube, config, plugins, issuer, readiness=waiting)
    if config.readiness_port is not None:
        op.readiness.serve(config.readiness_port, config.metrics_addr)
    if own is not None:
        op.background.append(asyncio.create_task(own.renew_forever()))
    if config.metrics_port is not None:
        op.metrics.factory.serve(config.metrics_port, config.metrics_addr)
    op.refresher.start()
    op.background.append(asyncio.create_task(op.connect_nats(own)))
    return op


def register(
    registry: kopf.OperatorRegistry,
    plugins: Iterable[KindPlugin],
    start: Start = start_operator,
) -> OperatorSlot:
    """Wire every handler of ``plugins`` on ``registry``: start-up settings and the
    :class:`Operator` (made by ``start``), each kind's reconcile, finalizer and loops, and the
    events of the child types they observe.

    Returns
    -------
    OperatorSlot
        Holds the operator once kopf has started it.
    """
    by_singular = index(plugins)
    slot = OperatorSlot()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        """kopf settings (annotation storage, our finalizer), then the operator itself."""
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="edgeloom.io"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="edgeloom.io", key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # the operator records its own phase events
        settings.persistence.finalizer = FINALIZER
        # reconciles mostly wait on the API server: run many at once (kopf's default is 5 + CPUs)
        settings.execution.max_workers = 32
        slot.current = await start(by_singular)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        """Stop refreshing, drain NATS and stop serving ``/readyz``."""
        op = slot.current
        if op is not None:
            for task in op.background:
                task.cancel()
            await op.refresher.stop()
            if op.link is not None:
                await op.link.close()
            await asyncio.to_thread(op.readiness.close)

    observed: set[ChildType] = set()
    for plugin in by_singular.values():
        _register_kind(registry, slot, plugin)
        observed.update(plugin.observes)
    for child in sorted(observed, key=lambda t: t.plural):
        _register_child_events(registry, slot, child)
    return slot


def _register_kind(registry: kopf.OperatorRegistry, slot: OperatorSlot, plugin: KindPlugin) -> None:
    plural = plugin.info.plural

    def handler(cause: Cause) -> Callable[..., None]:
        def reconcile(body: kopf.Body, **_: Any) -> None:
            slot.get().reconcile(plugin, _plain(body), cause)

        return reconcile

    kopf.on.create(GROUP, VERSION, plural, id="reconcile", registry=registry)(handler("create"))
    kopf.on.resume(GROUP, VERSION, plural, id="reconcile-on-resume", registry=registry)(
        handler("resume")
    )
    kopf.on.update(
        GROUP, VERSION, plural, field="spec", id="reconcile-on-update", registry=registry
    )(handler("update"))
    if plugin.external_state:

        @kopf.on.delete(
            GROUP, VERSION, plural, retries=CLEANUP_ATTEMPTS, id="run-state", registry=registry
        )
        async def finalize(body: kopf.Body, retry: int, **_: Any) -> None:
            await slot.get().finalize(plugin, _plain(body), retry)

    @kopf.on.event(GROUP, VERSION, plural, id="forget-deleted", registry=registry)
    def forget_deleted(type: str, body: kopf.Body, **_: Any) -> None:
        """The resource left the API server (after its finalizer, if any): forget it."""
        if type == "DELETED" and slot.current is not None:
            meta = body.metadata
            slot.current.forget(plugin.info, meta.namespace or "", meta.name or "")

    @kopf.timer(
        GROUP,
        VERSION,
        plural,
        id="nats-credentials",
        interval=CREDENTIALS_CHECK_S,
        idle=CREDENTIALS_CHECK_S,
        registry=registry,
    )
    def renew_credentials(body: kopf.Body, **_: Any) -> None:
        """Re-mint a long-lived resource's NATS credentials before they expire (pods re-read
        their mounted file when they reconnect)."""
        slot.get().renew_credentials(plugin, _plain(body))

    for loop in plugin.loops():
        _register_loop(registry, slot, plugin, loop)


def _register_loop(
    registry: kopf.OperatorRegistry, slot: OperatorSlot, plugin: KindPlugin, loop: Loop
) -> None:
    def active(status: kopf.Status, **_: Any) -> bool:
        return status.get("phase") in loop.phases

    @kopf.daemon(
        GROUP,
        VERSION,
        plugin.info.plural,
        id=loop.id,
        when=active,
        cancellation_timeout=5.0,
        registry=registry,
    )
    async def run(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
        """Run the loop's check every interval while the resource is in one of its phases."""
        op = slot.get()
        while not stopped:
            try:
                await loop.check(op, plugin, _plain(body))  # body: kopf's live view
            except NatsUnavailable as err:  # said once by the link already: no traceback
                log.warning("%s check of %s skipped: %s", loop.id, body.metadata.name, err)
            except Exception:  # one failed check (API, NATS) must not end the loop
                log.exception("%s check of %s failed", loop.id, body.metadata.name)
            await stopped.wait(loop.interval(op.config))


def _register_child_events(
    registry: kopf.OperatorRegistry, slot: OperatorSlot, child: ChildType
) -> None:
    @kopf.on.event(
        group=child.group,
        version=child.version,
        plural=child.plural,
        labels={"app.kubernetes.io/managed-by": MANAGER},
        id=f"{child.plural}-changed",
        registry=registry,
    )
    async def on_child_event(body: kopf.Body, **_: Any) -> None:
        """A child changed: ask for a (coalesced) refresh of its resource's status."""
        op = slot.current
        labels = body.metadata.labels
        plugin = op.plugins.get(labels.get("edgeloom.io/kind", "")) if op else None
        name = labels.get("edgeloom.io/job")
        if op is not None and plugin is not None and name and child in plugin.observes:
            op.refresher.request((body.metadata.namespace or "", plugin.info.kind, name))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dict(body))))
