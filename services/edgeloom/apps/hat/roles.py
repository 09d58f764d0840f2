"""The HatInferenceService roles: ``cloud`` serves the middle blocks to every device's
sequences; ``device`` holds the outer blocks and the adapter and serves the OpenAI-compatible
endpoint, verifying its drafts with whichever cloud replica opened each sequence.

Both run until the service is deleted (``ctx.stop``). The device prepares its adapter first:
the folder ``adapter.source`` names, or the cached result of the prepare step (trained on first
use; replicas on one machine share it through the cache's file lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from edgeloom.algos.hat.adapter import Adapter, AdapterSpec, load_adapter
from edgeloom.algos.hat.distill import DistillSettings
from edgeloom.algos.hat.split import HatParts, HatSplit
from edgeloom.api import podenv
from edgeloom.api.kinds.hatinferenceservice import (
    ChunkingMode,
    HatInferenceServiceSpec,
    ServingMethod,
)
from edgeloom.apps.hat.cloud import (
    BusCloud,
    CloudSchedule,
    CloudSessions,
    SessionLimits,
    serve_cloud,
)
from edgeloom.apps.hat.endpoint import TOKEN_METHODS, DeviceEngine, ServingSettings, create_app
from edgeloom.apps.hat.messages import HIDDEN, TOKENS
from edgeloom.apps.hat.metrics import CloudMetrics, DeviceMetrics
from edgeloom.apps.hat.prepare import prepare_adapter
from edgeloom.models.builtins import builtin_model_folder
from edgeloom.models.llm import load_model
from edgeloom.runtime.artifacts import fetch_model_folder
from edgeloom.runtime.reporter import JobFailed
from edgeloom.runtime.role import RoleContext

log = logging.getLogger(__name__)

MIDDLE = "middle"
"""The channel of the service's cloud requests (``<service>.middle`` and its replicas')."""


class _Server(uvicorn.Server):
    """uvicorn without signal handlers of its own: the role's stop event ends it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def split_of(spec: HatInferenceServiceSpec) -> HatSplit:
    return HatSplit(spec.split.input_layers, spec.split.output_layers)


async def load_split_model(
    ctx: RoleContext[HatInferenceServiceSpec], scratch: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Path]:
    """The spec's model in inference mode, its tokenizer and its folder."""
    folder = await fetch_model_folder(ctx.bus, ctx.spec.model, scratch, builtin_model_folder)
    try:
        model, tokenizer = await asyncio.to_thread(load_model, folder)
        split_of(ctx.spec).check(int(model.config.num_hidden_layers))
    except (FileNotFoundError, ValueError) as error:
        raise JobFailed(f"model: {error}") from error
    return model.eval(), tokenizer, folder


async def cloud(ctx: RoleContext[HatInferenceServiceSpec]) -> None:
    """One cloud replica: the middle blocks for the sequences it opens, until stopped."""
    spec = ctx.spec
    with tempfile.TemporaryDirectory(prefix="edgeloom-hat-") as scratch:
        model, _, _ = await load_split_model(ctx, Path(scratch))
    bounds = spec.sessions
    limits = SessionLimits(
        bounds.max_sessions,
        bounds.max_positions,
        bounds.max_tokens_per_request,
        bounds.idle_timeout_seconds,
    )
    schedule = CloudSchedule(compute_factor=spec.cloud.compute_factor)
    whole = spec.method in TOKEN_METHODS
    parts = HatParts(model, split_of(spec))
    sessions = CloudSessions(parts, limits, schedule=schedule, whole=whole)
    log.info("%s: serving the middle blocks on %s", ctx.identity, ctx.subject(MIDDLE))
    metrics = CloudMetrics(ctx.metrics)
    await serve_cloud(ctx.bus, ctx.subject(MIDDLE), sessions, ctx.stop, metrics=metrics)


async def device_adapter(
    ctx: RoleContext[HatInferenceServiceSpec], model: PreTrainedModel, folder: Path, scratch: Path
) -> tuple[HatParts, Adapter]:
    """The split and adapter the device drafts with: the prepared folder the spec names, or
    the prepare step's cached result."""
    spec = ctx.spec
    wanted = spec.adapter
    shape = AdapterSpec(wanted.kind.value, wanted.depth, wanted.width)
    if spec.method in (ServingMethod.U_SHAPE, ServingMethod.CLOUD_ONLY):  # never drafts
        parts = HatParts(model, split_of(spec))
        return parts, Adapter(parts, shape).eval()
    if wanted.source is not None:
        adapter_folder = await fetch_model_folder(
            ctx.bus, wanted.source, scratch / "adapter", builtin_model_folder
        )
    else:
        t = wanted.training
        settings = DistillSettings(
            steps=t.steps, batch_size=t.batch_size, learning_rate=t.learning_rate, seed=t.seed
        )
        log.info("%s: preparing the adapter (%d steps; cached after)", ctx.identity, t.steps)
        adapter_folder = await asyncio.to_thread(
            prepare_adapter, folder, split_of(spec), shape, settings
        )
    try:
        parts, adapter = await asyncio.to_thread(load_adapter, model, adapter_folder)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise JobFailed(f"adapter: {error}") from error
    if parts.split != split_of(spec):
        raise JobFailed(
            f"adapter.source: the adapter was trained for split {parts.split}, the spec "
            f"asks for {split_of(spec)}"
        )
    return parts, adapter.eval()


def serving_settings(ctx: RoleContext[HatInferenceServiceSpec]) -> ServingSettings:
    spec = ctx.spec
    s, chunking = spec.speculation, spec.chunking
    if spec.method == ServingMethod.U_SHAPE:
        s = s.model_copy(update={"gamma_min": 0, "gamma_initial": 0, "gamma_max": 0})
    return ServingSettings(
        model_id=ctx.name,
        method=spec.method,
        max_tokens=s.max_tokens,
        default_max_tokens=s.default_max_tokens,
        gamma_min=s.gamma_min,
        gamma_max=s.gamma_max,
        gamma_initial=s.gamma_initial,
        adaptive_gamma=s.adaptive_gamma,
        parallel_drafting=s.parallel_drafting,
        chunk_size=None if chunking.mode == ChunkingMode.OFF else chunking.chunk_size,
        adaptive_chunking=chunking.mode == ChunkingMode.ADAPTIVE,
    )


def listen_port(ctx: RoleContext[HatInferenceServiceSpec]) -> int:
    """The group's port, offset by the replica's place in its group when replicas share a
    host (``EDGELOOM_HTTP_PORT_SPREAD``)."""
    group = ctx.spec.group_of(ctx.index)
    if os.environ.get(podenv.HTTP_PORT_SPREAD) != "1":
        return group.port
    start = 0
    for g in ctx.spec.devices:
        if g is group:
            break
        start += g.count
    return group.port + ctx.index - start


async def device(ctx: RoleContext[HatInferenceServiceSpec]) -> None:
    """One device: prepare the adapter, then serve the endpoint until stopped."""
    with tempfile.TemporaryDirectory(prefix="edgeloom-hat-") as scratch:
        model, tokenizer, folder = await load_split_model(ctx, Path(scratch))
        parts, adapter = await device_adapter(ctx, model, folder, Path(scratch))
    carries = TOKENS if ctx.spec.method in TOKEN_METHODS else HIDDEN
    link = BusCloud(ctx.bus, ctx.subject(MIDDLE), asyncio.get_running_loop(), carries=carries)
    engine = DeviceEngine(
        parts,
        adapter,
        tokenizer,
        link,
        serving_settings(ctx),
        DeviceMetrics(ctx.metrics),
        ctx.spec.group_of(ctx.index).profile,
    )
    addr = os.environ.get(podenv.HTTP_ADDR, "0.0.0.0")
    port = listen_port(ctx)
    config = uvicorn.Config(
        create_app(engine), host=addr, port=port, log_level="warning", lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():  # uvicorn exits when the port is taken or the address is not ours
            raise JobFailed(f"devices: cannot listen on {addr}:{port} (in use?)")
        await asyncio.sleep(0.05)
    url = f"http://{'127.0.0.1' if addr == '0.0.0.0' else addr}:{port}/v1"
    log.info("%s: serving the OpenAI-compatible API at %s", ctx.identity, url)
    if ctx.run_dir is not None:
        announce = ctx.run_dir / podenv.ENDPOINTS_DIR / ctx.identity
        announce.parent.mkdir(parents=True, exist_ok=True)
        partial = announce.with_name(f".{ctx.identity}")
        partial.write_text(url + "\n")
        partial.replace(announce)  # whole or not there: the runner may read it any moment
    try:
        await ctx.stop.wait()
    finally:
        server.should_exit = True
        await task
