"""``edgeloom run FILE``: the resource's roles as local processes over an embedded NATS.

The runner reads the same file a user would ``kubectl apply``, validates it before starting
anything, starts nats-server (unless given a URL), spawns every role with the pod entrypoint
(``edgeloom serve``), shows the coordinator's progress, and writes ``result.json``, role
logs, metrics and a plot under ``runs/<name>/``. The first role of a kind is its coordinator:
when it exits 0 the job is done; when any role exits non-zero the runner stops the rest and
fails, naming the role, and ``result.json`` says Failed, with the progress the job reached.
Roles a kind marks non-essential (SplitTrainingJob workers) may die without failing the run:
the job's own participation policy decides, as it does in a cluster. A service kind
(HatInferenceService) has no end: its roles serve until Ctrl-C, a role that exits fails the
run, and the runner prints each replica's endpoint (``device-0 serving at URL``) as it starts.

The embedded nats-server trusts a fresh authority per run, and every role connects as a user
with the permissions its pod would get (:mod:`edgeloom.runtime.natsauth`), so only the
coordinator can publish the result the runner reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError
from tqdm import tqdm

from edgeloom.api import podenv
from edgeloom.api.messages import JobResult
from edgeloom.api.registry import KindInfo, kind_info
from edgeloom.api.resource import InvalidResource, Resource, parse_resource
from edgeloom.api.status import Phase, Status, set_summary_conditions
from edgeloom.local.nats_server import NatsServer
from edgeloom.local.procs import die_with_parent
from edgeloom.local.report import print_comparison, print_summary, write_plot
from edgeloom.runtime.bus import Bus, Message, NatsAccess
from edgeloom.runtime.logs import role_log_handler
from edgeloom.runtime.natsauth import ADMIN, Authority, job_credentials
from edgeloom.runtime.role import load_resource_file, run_role
from edgeloom.runtime.subjects import subject

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0
POLL_S = 0.2
LOCAL_ENV = {podenv.HTTP_ADDR: "127.0.0.1", podenv.HTTP_PORT_SPREAD: "1"}
"""What a role is told on this host: HTTP on the loopback only, and replicas, which share the
host, on ports of their own."""


def announce_endpoints(run_dir: Path | None, shown: set[str]) -> None:
    """Print the URL of every replica that has started serving since the last call."""
    folder = run_dir / podenv.ENDPOINTS_DIR if run_dir is not None else None
    if folder is None or not folder.is_dir():
        return
    for path in sorted(folder.glob("[!.]*")):  # a replica writes .<name> first, then renames
        if path.name not in shown:
            shown.add(path.name)
            print(f"{path.name} serving at {path.read_text().strip()}", flush=True)


class RunFailed(RuntimeError):
    """A role failed; the message names it, with the tail of its log when there is one.

    ``reason`` is the message without the log; ``result`` the Failed result the run reports,
    set by the runner before the error leaves it.
    """

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(f"{reason}:\n{log_tail}" if log_tail else reason)
        self.reason = reason
        self.result: JobResult | None = None


@dataclass
class RoleProcess:
    role: str
    index: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])


def load_and_validate(path: Path) -> tuple[KindInfo, Resource[Any]]:
    """Parse a resource file as ``kubectl apply`` would take it; nothing is started.

    Raises
    ------
    InvalidResource
        Naming the bad field (or the file's line and column). A ``status`` block or another
        field beside apiVersion, kind, metadata and spec is refused: kubectl refuses unknown
        fields, and the API server never takes status from an applied file.
    """
    try:
        obj = load_resource_file(path)
    except OSError as err:
        raise InvalidResource(str(err)) from None
    if "status" in obj:
        raise InvalidResource(
            "status: a resource file must not set status; edgeloom writes it as the job runs"
        )
    fields = ("apiVersion", "kind", "metadata", "spec")
    unknown = [f"{key}: unknown field" for key in obj if key not in fields]
    if unknown:
        raise InvalidResource("\n".join(unknown))
    try:
        info = kind_info(str(obj.get("kind")))
    except KeyError as err:
        raise InvalidResource(f"kind: {err.args[0]}") from None
    return info, parse_resource(obj, info.spec_model, info.kind)


@dataclass(frozen=True)
class RunNats:
    """The NATS identities of one run: the runner's own and one per role."""

    runner: NatsAccess
    roles: dict[str, NatsAccess]

    @classmethod
    def external(cls, info: KindInfo, url: str) -> RunNats:
        """Everyone connects to ``url`` as the environment says (EDGELOOM_NATS_CREDS...)."""
        access = NatsAccess.from_env(url)
        return cls(access, {role.name: access for role in info.roles})

    @classmethod
    def embedded(
        cls, server: NatsServer, info: KindInfo, resource: Resource[Any], run_dir: Path
    ) -> RunNats:
        """A user per role with the permissions a pod of that role gets, and an admin for the
        runner, minted by ``server``'s authority into ``run_dir/nats/*.creds`` (mode 0600)."""
        assert server.authority is not None
        issuer, meta = server.authority.issuer, resource.metadata
        folder = run_dir / "nats"
        folder.mkdir(mode=0o700)

        def access(user: str, creds: str) -> NatsAccess:
            path = folder / f"{user}.creds"
            path.touch(mode=0o600)
            path.write_text(creds)
            return NatsAccess(server.url, path)

        runner = issuer.creds(f"{meta.namespace}/{meta.name}/runner", ADMIN)
        roles = job_credentials(issuer, info, meta.namespace, meta.name, resource.spec)
        return cls(
            access("runner", runner), {role: access(role, creds) for role, creds in roles.items()}
        )


def _spawn(
    path: Path, role: str, index: int, nats: NatsAccess, run_dir: Path, run_id: str
) -> RoleProcess:
    log_path = run_dir / "logs" / f"{role}-{index}.log"
    log: TextIO = log_path.open("w")
    env = {
        **os.environ,
        **LOCAL_ENV,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        podenv.RUN_ID: run_id,
    }
    if nats.creds is not None:
        env[podenv.NATS_CREDS] = str(nats.creds)
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeloom.cli.main",
            "serve",
            "--resource",
            str(path),
            "--role",
            role,
            "--index",
            str(index),
            "--nats",
            nats.url,
            "--run-dir",
            str(run_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=die_with_parent,
    )
    log.close()
    return RoleProcess(role, index, popen, log_path)


def stop_all(procs: list[RoleProcess]) -> None:
    """SIGTERM every live role, then SIGKILL whatever has not exited after the grace period."""
    for p in procs:
        if p.popen.poll() is None:
            p.popen.terminate()
    for p in procs:
        try:
            p.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.bar = tqdm(total=None, unit="round", disable=not enabled, dynamic_ncols=True)

    async def on_status(self, message: Message) -> None:
        progress = json.loads(message.envelope_json).get("progress", {})
        if progress.get("totalRounds") and self.bar.total != progress["totalRounds"]:
            self.bar.total = progress["totalRounds"]
        if progress.get("round") is not None:
            self.bar.n = progress["round"]
        postfix = {}
        if progress.get("metricValue") is not None:
            postfix[progress.get("metricName", "metric")] = f"{progress['metricValue']:.4f}"
        if progress.get("participantsDropped"):
            postfix["dropped"] = progress["participantsDropped"]
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()


class _Watcher:
    """The runner's own bus connection: progress from status reports, the final result."""

    def __init__(self, bus: Bus, show_progress: bool) -> None:
        self.bus = bus
        self.progress = _Progress(show_progress)
        self.results: list[JobResult] = []
        self.last_status: dict[str, Any] = {}

    @classmethod
    async def start(
        cls, info: KindInfo, resource: Resource[Any], nats: NatsAccess, show_progress: bool
    ) -> _Watcher:
        ns, name = resource.metadata.namespace, resource.metadata.name
        watcher = cls(await Bus.connect(nats, f"{name}-runner"), show_progress)
        await watcher.bus.subscribe(subject(ns, info.kind, name, "status"), watcher._on_status)
        await watcher.bus.subscribe(subject(ns, info.kind, name, "result"), watcher._on_result)
        return watcher

    async def _on_status(self, message: Message) -> None:
        self.last_status = json.loads(message.envelope_json)
        await self.progress.on_status(message)

    async def _on_result(self, message: Message) -> None:
        self.results.append(message.parse(JobResult))

    async def result(self, coordinator: str) -> JobResult:
        await self.bus.nc.flush()  # a result published just before the coordinator exited
        if not self.results:
            raise RunFailed(f"{coordinator} finished without publishing a result")
        return self.results[-1]

    async def failed_result(self, status_model: type[Status], reason: str) -> JobResult:
        """The result of a run that failed for ``reason``: Failed, whatever was published.

        Builds on the coordinator's last result, else on its last status report, so the
        progress, summary and history it reached are kept; a Failed result's message (why the
        job failed) comes first.
        """
        try:  # what the coordinator published just before it exited; NATS may be what failed
            await self.bus.nc.flush(timeout=2)
        except Exception as err:  # the role's failure is what the run reports, not this
            log.warning("cannot flush the runner's NATS connection: %s", err)
        last = self.results[-1] if self.results else JobResult(succeeded=False, status={})
        try:
            status = status_model.model_validate(last.status or self.last_status)
        except ValidationError:
            status = status_model()
        if status.phase != Phase.FAILED:  # a Failed status already says why, in the job's words
            status.phase = Phase.FAILED
            status.conditions = set_summary_conditions(
                status.conditions,
                Phase.FAILED,
                False,
                "RoleFailed",
                reason,
                status.observed_generation,
            )
        message = f"{last.message} ({reason})" if last.message and not last.succeeded else reason
        return last.model_copy(
            update={"succeeded": False, "message": message, "status": status.to_wire()}
        )

    async def close(self) -> None:
        self.progress.bar.close()
        await self.bus.drain()


async def supervise(
    info: KindInfo,
    resource: Resource[Any],
    path: Path,
    nats: RunNats,
    run_dir: Path,
    show_progress: bool,
) -> JobResult:
    """Spawn every role and wait for the coordinator; raises RunFailed naming a failed role."""
    watcher = await _Watcher.start(info, resource, nats.runner, show_progress)
    procs = [
        _spawn(path, role.name, i, nats.roles[role.name], run_dir, str(resource.metadata.uid))
        for role in info.roles
        for i in range(role.replicas(resource.spec))
    ]
    coordinator = info.roles[0].name
    lost: set[str] = set()
    shown: set[str] = set()
    try:
        while True:
            await asyncio.sleep(POLL_S)
            announce_endpoints(run_dir, shown)
            for p in procs:
                code = p.popen.poll()
                if code is None or (code == 0 and info.shape == "job") or p.name in lost:
                    continue  # a service's role never ends by itself
                if info.role(p.role).essential:
                    raise RunFailed(
                        f"role {p.name} (pid {p.popen.pid}) exited with code {code}; "
                        f"log {p.log_path}",
                        p.log_tail(),
                    )
                lost.add(p.name)
                log.warning(
                    "role %s (pid %d) exited with code %s; the job goes on as its "
                    "participation policy allows",
                    p.name,
                    p.popen.pid,
                    code,
                )
            if info.shape == "job" and all(
                p.popen.poll() == 0 for p in procs if p.role == coordinator
            ):
                break
        return await watcher.result(coordinator)
    except RunFailed as err:
        err.result = await watcher.failed_result(info.status_model, err.reason)
        raise
    finally:
        await asyncio.to_thread(stop_all, procs)
        await watcher.close()


async def run_in_process(
    info: KindInfo,
    resource: Resource[Any],
    nats: RunNats,
    run_dir: Path | None = None,
    show_progress: bool = False,
) -> JobResult:
    """Every role as a task of this process, each with its own bus connection.

    The same role code as in pods, minus one interpreter per role: for benchmarks, tests and
    small machines. Device time is still per role (compute is timed per call, in this thread,
    so torch is limited to one intra-op thread here, as each role process is).
    """
    import torch

    torch.set_num_threads(1)
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)  # this process is the host every role shares
    watcher = await _Watcher.start(info, resource, nats.runner, show_progress)
    roles = [(role.name, i) for role in info.roles for i in range(role.replicas(resource.spec))]
    stops = {r: asyncio.Event() for r in roles}
    handlers = (
        [role_log_handler(run_dir / "logs" / f"{r}-{i}.log", f"{r}-{i}") for r, i in roles]
        if run_dir is not None
        else []
    )
    for handler in handlers:
        logging.getLogger().addHandler(handler)
    tasks = {
        r: asyncio.create_task(
            run_role(info, resource, r[0], r[1], nats.roles[r[0]], stops[r], run_dir=run_dir)
        )
        for r in roles
    }
    coordinator = [t for (role, _), t in tasks.items() if role == info.roles[0].name]
    shown: set[str] = set()
    try:
        pending = set(tasks.values())
        while coordinator and not all(t.done() for t in coordinator):
            done, pending = await asyncio.wait(
                pending, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            announce_endpoints(run_dir, shown)
            for (role, i), task in tasks.items():
                if task not in done or (task.exception() is None and info.shape == "job"):
                    continue  # a service's role never ends by itself
                why = repr(task.exception()) if task.exception() else "it stopped serving"
                if info.role(role).essential:
                    raise RunFailed(f"role {role}-{i} failed: {why}")
                log.warning(
                    "role %s-%d failed: %s; the job goes on as its participation policy allows",
                    role,
                    i,
                    why,
                )
        return await watcher.result(info.roles[0].name)
    except RunFailed as err:
        err.result = await watcher.failed_result(info.status_model, err.reason)
        raise
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await watcher.close()
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


def run_file(
    path: Path,
    nats_url: str | None = None,
    runs_dir: Path = Path("runs"),
    show_progress: bool = True,
    in_process: bool = False,
) -> JobResult:
    """Run a resource file locally and write its results; see the module docstring."""
    info, resource = load_and_validate(path)
    resource.metadata.uid = resource.metadata.uid or str(uuid.uuid4())  # this run's identity
    run_dir = runs_dir / resource.metadata.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    title = f"{info.kind} {resource.metadata.name}"
    with ExitStack() as stack:
        if nats_url is not None:
            nats = RunNats.external(info, nats_url)
        else:
            server = stack.enter_context(NatsServer(authority=Authority.new()))
            nats = RunNats.embedded(server, info, resource, run_dir)
        try:
            if in_process:
                result = asyncio.run(run_in_process(info, resource, nats, run_dir, show_progress))
            else:
                result = asyncio.run(
                    supervise(info, resource, path.resolve(), nats, run_dir, show_progress)
                )
        except RunFailed as err:
            if err.result is not None:
                write_result(err.result, run_dir, title)
            raise
    write_result(result, run_dir, title)
    print_summary(result, run_dir)
    print_comparison(resource.spec.to_wire())
    return result


def write_result(result: JobResult, run_dir: Path, title: str) -> None:
    """``result.json`` and, when the history has the headline metric, ``progress.png``."""
    (run_dir / "result.json").write_text(json.dumps(result.to_wire(), indent=2) + "\n")
    write_plot(result, run_dir / "progress.png", title=title)
