"""Running one role of a resource: the same code path in a pod and under the local runner.

``edgeloom serve`` calls :func:`serve`, which parses the resource, connects the bus, starts the
metrics endpoint, installs SIGTERM/SIGINT handling and awaits the kind's role function
``ROLES[role](ctx)`` from the kind's app module.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic

import yaml

from edgeloom.api import podenv
from edgeloom.api.registry import KindInfo, kind_info
from edgeloom.api.resource import Resource, SpecT, parse_resource
from edgeloom.api.status import Status
from edgeloom.runtime.bus import Bus, nats_credentials, stop_on_signals
from edgeloom.runtime.logs import ROLE_IDENTITY
from edgeloom.runtime.metrics import MetricFactory, MetricsEndpoint
from edgeloom.runtime.subjects import subject

log = logging.getLogger(__name__)

TERMINATION_MESSAGE_BYTES = 4096


@dataclass
class RoleContext(Generic[SpecT]):
    """What a role function gets: its resource, identity, bus, metrics and stop signal;
    ``RoleContext[SplitTrainingJobSpec]`` types ``spec`` for one kind's roles."""

    info: KindInfo
    resource: Resource[SpecT]
    role: str
    index: int
    bus: Bus
    metrics: MetricFactory
    stop: asyncio.Event
    run_dir: Path | None = None
    last_status: Status | None = None

    @property
    def spec(self) -> SpecT:
        return self.resource.spec

    @property
    def name(self) -> str:
        return self.resource.metadata.name

    @property
    def namespace(self) -> str:
        return self.resource.metadata.namespace

    @property
    def run_id(self) -> str:
        """Identifies one execution of the job (the resource uid in Kubernetes; the local
        runner sets EDGELOOM_RUN_ID)."""
        return os.environ.get(podenv.RUN_ID) or self.resource.metadata.uid or "default"

    @property
    def identity(self) -> str:
        return f"{self.role}-{self.index}"

    def subject(self, *channel: str) -> str:
        """A subject of this job: ``edgeloom.<ns>.<kind>.<name>.<channel...>``."""
        return subject(self.namespace, self.info.kind, self.name, *channel)

    async def report(self, status: Status) -> None:
        """Publish a status report on the job's ``status`` subject (what operators copy into
        ``.status``); the last one is also written as the pod's termination message."""
        self.last_status = status
        await self.bus.publish(self.subject("status"), status)


RoleMain = Callable[[RoleContext[Any]], Coroutine[Any, Any, None]]


def load_resource_file(path: Path) -> dict[str, Any]:
    """Read a single-document resource YAML file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    if len(docs) != 1:
        raise ValueError(f"{path}: expected exactly one resource, found {len(docs)}")
    if not isinstance(docs[0], dict):
        raise ValueError(f"{path}: a resource must be a mapping")
    return docs[0]


def role_main(info: KindInfo, role: str) -> RoleMain:
    """The role function registered by the kind's app module."""
    module = importlib.import_module(info.app_module)
    roles: dict[str, RoleMain] = module.ROLES
    if role not in roles:
        raise KeyError(f"{info.kind} has no role {role!r} (roles: {', '.join(roles)})")
    return roles[role]


async def run_role(
    info: KindInfo,
    resource: Resource[Any],
    role: str,
    index: int,
    nats_url: str,
    stop: asyncio.Event,
    endpoint: MetricsEndpoint | None = None,
    run_dir: Path | None = None,
) -> bool:
    """Run one role until it finishes (True) or ``stop`` is set (False); the bus is drained
    either way. With an ``endpoint``, ``/metrics`` is served there, and for its ``linger_s``
    after the work is done (``stop`` cuts that short)."""
    main = role_main(info, role)
    metrics = MetricFactory(
        const_labels={"kind": info.kind, "role": role, "name": resource.metadata.name}
    )
    if endpoint is not None:
        metrics.serve(endpoint.port, endpoint.addr)
    bus = await Bus.connect(
        nats_url, f"{resource.metadata.name}-{role}-{index}", **nats_credentials()
    )
    ctx = RoleContext(info, resource, role, index, bus, metrics, stop, run_dir)
    ROLE_IDENTITY.set(ctx.identity)  # this task's context only, and the tasks it starts
    try:
        task = asyncio.create_task(main(ctx))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            log.info("%s: stop requested, shutting down", ctx.identity)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        stopper.cancel()
        task.result()
        if endpoint is not None and endpoint.linger_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), endpoint.linger_s)
        return True
    finally:
        if run_dir is not None:
            metrics.write(run_dir / "metrics" / f"{ctx.identity}.prom")
        if ctx.last_status is not None and podenv.TERMINATION_MESSAGE_PATH in os.environ:
            try:
                write_termination_message(
                    Path(os.environ[podenv.TERMINATION_MESSAGE_PATH]), ctx.last_status
                )
            except OSError as err:  # the bus must still drain
                log.warning("could not write the termination message: %s", err)
        await bus.drain()


def write_termination_message(path: Path, status: Status) -> None:
    """Write ``status`` as compact JSON within the kubelet's 4096-byte termination message.

    The operator reads it from the finished pod, so a job's final status survives an operator
    that was down when the last report went over NATS. Long condition messages are shortened
    to fit.
    """
    for limit in (None, 512, 64, 0):
        shown = status.model_copy(deep=True)
        for condition in shown.conditions:
            condition.message = condition.message[:limit]
        if limit == 0:  # still too long: phase and results matter most
            shown.conditions = []
        text = json.dumps(shown.to_wire(), separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_MESSAGE_BYTES:
            break
    path.write_text(text)


async def serve(
    resource_path: Path,
    role: str,
    index: int,
    nats_url: str,
    endpoint: MetricsEndpoint | None = None,
    run_dir: Path | None = None,
) -> bool:
    """The pod entrypoint: one role process, stopped cleanly by SIGTERM or SIGINT.

    Returns whether the role finished its work (False: stopped by a signal first).
    """
    obj = load_resource_file(resource_path)
    info = kind_info(obj.get("kind", ""))
    info.role(role)  # unknown role: KeyError before connecting
    resource: Resource[Any] = parse_resource(obj, info.spec_model, info.kind)
    stop = asyncio.Event()
    stop_on_signals(stop)
    return await run_role(info, resource, role, index, nats_url, stop, endpoint, run_dir)
