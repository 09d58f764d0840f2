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
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic

import yaml

from edgeloom.api import podenv
from edgeloom.api.registry import KindInfo, kind_info
from edgeloom.api.resource import InvalidResource, Resource, SpecT, parse_resource
from edgeloom.api.status import Status
from edgeloom.runtime.bus import Bus, NatsAccess, stop_on_signals
from edgeloom.runtime.logs import ROLE_IDENTITY
from edgeloom.runtime.metrics import MetricFactory, MetricsEndpoint
from edgeloom.runtime.natsauth import inbox_prefix
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


MAX_RESOURCE_FILE_BYTES = 1 << 20
"""The largest resource file read: a ConfigMap's limit (1 MiB), which carries it into pods."""
MAX_RESOURCE_NODES = 100_000
"""YAML nodes a resource may expand to through aliases (a few lines of anchors can expand to
billions); kubectl's YAML library refuses such excessive aliasing too."""

_YAML = "tag:yaml.org,2002:"
_JSON_TAGS = frozenset(f"{_YAML}{t}" for t in ("null", "bool", "int", "float", "str", "seq", "map"))
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
"""Floats such as ``1e15`` or ``2.0e6``: numbers to kubectl (and YAML 1.2), strings to
PyYAML, whose YAML 1.1 floats need a dot and a signed exponent."""


class _ResourceLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading a file the way kubectl does.

    Only JSON's types come out: timestamp-like scalars stay strings, ``1e15`` is a float, and
    any other tag (``!!python/object``, ``!!binary``, ``!!set``) is refused. Duplicate keys are
    refused, as ``kubectl apply`` refuses them, and so is a document that aliases expand past
    :data:`MAX_RESOURCE_NODES`.
    """

    yaml_constructors = {
        tag: construct
        for tag, construct in yaml.SafeLoader.yaml_constructors.items()
        if tag in _JSON_TAGS
    }
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != f"{_YAML}timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None and _expanded_nodes(node, {}) > MAX_RESOURCE_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand the document past {MAX_RESOURCE_NODES} nodes (or make it "
                "contain itself)",
                node.start_mark,
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}  # key -> the line it is first given on
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != f"{_YAML}merge":
                key = self.construct_object(key_node)
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first given on line {lines[key]})",
                        key_node.start_mark,
                    )
                lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def refuse_tag(self, node: yaml.Node) -> None:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"tag {node.tag!r} is not allowed: a resource holds only mappings, lists, strings, "
            "numbers, booleans and null",
            node.start_mark,
        )


_ResourceLoader.add_constructor(None, _ResourceLoader.refuse_tag)
_ResourceLoader.add_implicit_resolver(f"{_YAML}float", _EXPONENT_FLOAT, list("-+0123456789."))


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in ``node`` with every alias expanded, counted once per distinct node; a node
    that contains itself counts as too many."""
    if id(node) not in sizes:
        sizes[id(node)] = MAX_RESOURCE_NODES + 1  # until known: a cycle is too large
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        sizes[id(node)] = 1 + sum(_expanded_nodes(child, sizes) for child in children)
    return sizes[id(node)]


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    """``path: line L, column C: problem``, as a YAML error is best read."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f"{path}: not valid YAML: {err}"
    mark = err.problem_mark
    context = f" ({err.context})" if err.context else ""
    return f"{path}: line {mark.line + 1}, column {mark.column + 1}: {err.problem}{context}"


def load_resource_file(path: Path) -> dict[str, Any]:
    """Read a single-document resource YAML file as kubectl would (see :class:`_ResourceLoader`).

    Raises
    ------
    InvalidResource
        For a file too large, not UTF-8 or not YAML (naming the line and column), for a
        disallowed tag or duplicate key, and unless it holds exactly one mapping.
    OSError
        When the file cannot be read.
    """
    if path.stat().st_size > MAX_RESOURCE_FILE_BYTES:
        raise InvalidResource(f"{path}: larger than {MAX_RESOURCE_FILE_BYTES} bytes")
    try:
        docs = [d for d in yaml.load_all(path.read_text(), Loader=_ResourceLoader) if d is not None]
    except UnicodeDecodeError as err:
        raise InvalidResource(f"{path}: not a UTF-8 text file ({err.reason})") from None
    except yaml.YAMLError as err:
        raise InvalidResource(_yaml_problem(path, err)) from None
    except RecursionError:
        raise InvalidResource(f"{path}: nested too deeply") from None
    if len(docs) != 1:
        raise InvalidResource(f"{path}: expected exactly one resource, found {len(docs)}")
    if not isinstance(docs[0], dict):
        raise InvalidResource(f"{path}: a resource must be a mapping")
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
    nats: NatsAccess,
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
    meta = resource.metadata
    bus = await Bus.connect(
        nats,
        f"{meta.name}-{role}-{index}",
        inbox_prefix=inbox_prefix(meta.namespace, info.kind, meta.name, role),
        stop=stop,
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
    access = NatsAccess.from_env(nats_url)
    return await run_role(info, resource, role, index, access, stop, endpoint, run_dir)
