"""A fake kubelet for the e2e tier: pods bound to fake Nodes run as local processes.

Test infrastructure, not a product feature. :class:`NodeAgent` watches the pods whose
``spec.nodeName`` is one of its nodes and, for each, does what a kubelet would, with a local
process standing in for each container (the container image would hold this same repository).
Whatever owns the pod (a Job, a Deployment's ReplicaSet, a StatefulSet, nothing) makes no
difference: run-to-completion pods (restartPolicy Never) end Succeeded or Failed, long-running
ones (Always) are kept running and reported Ready, which is what a ReplicaSet's availability
(and a Deployment's ``minReadySeconds``) counts:

- **Volumes** are materialized into ``<pod dir>/volumes/<name>``: ``emptyDir``; ``configMap``
  and ``secret`` (``items``, ``defaultMode``/``mode``, ``optional``; a missing non-optional
  source keeps the pod Pending and is retried, as kubelet does); ``downwardAPI``; ``projected``
  (those three plus ``serviceAccountToken``, through the TokenRequest API); ``hostPath`` (the host
  path itself); ``persistentVolumeClaim`` (a per-claim directory kept across pods). Contents are
  written once, at pod start, and not refreshed.
- **Path mapping.** Each ``volumeMounts[].mountPath`` (with ``subPath``) and the container's
  ``terminationMessagePath`` (default ``/dev/termination-log``) map to a local path. Every
  command word, arg and env value that equals a mapped path or starts with ``<path>/`` is
  rewritten to the local path; so is the value part of a ``--flag=<path>`` word. Paths a program
  hard-codes internally are not rewritten. The working directory is the pod directory (or
  ``workingDir``, if it lies under a mapped path).
- **Command.** ``command`` + ``args`` after Kubernetes ``$(VAR)`` expansion (``$$`` escapes,
  unknown names stay verbatim). Without ``command`` the ``args`` are the whole command line
  (there is no image entrypoint to fall back on). A bare ``command[0]`` is looked up beside
  ``sys.executable`` (the virtualenv's ``edgeloom``, ``kopf``, ``nats-server``, ``python``), then
  on ``PATH``; an absolute path that does not exist here is looked up by its basename the same
  way.
- **Environment.** This process's environment (minus ``KUBECONFIG`` and ``KUBERNETES_*``) plus
  ``HOSTNAME``, ``PYTHONUNBUFFERED=1`` and the virtualenv's bin first on ``PATH``; then
  ``envFrom`` and ``env`` (``value`` with expansion, ``secretKeyRef``, ``configMapKeyRef``,
  ``fieldRef`` with the pod's own loopback IP, ``resourceFieldRef``). No service-link
  variables and, on purpose, no ``KUBERNETES_SERVICE_HOST``.
- **Service account.** When the pod has a ``serviceAccountName`` and automounting is not off
  (pod first, then service account), a TokenRequest token bound to the pod goes into a
  kubeconfig (``<pod dir>/serviceaccount/kubeconfig``, namespace preset) named by
  ``KUBECONFIG``. In-cluster clients find no ``KUBERNETES_SERVICE_HOST`` and fall back to it, so
  the process acts as its service account and RBAC applies.
- **Lifecycle.** Init containers run to completion in order, then all containers start, each
  in its own session (its process group is signalled as a whole) with ``PR_SET_PDEATHSIG``: if
  pytest dies, each container's main process dies too (its own children only if they arrange
  it, as ``edgeloom run`` does for its roles). Status is reported
  as a kubelet does (Pending, Running with its podIP and Ready conditions, then Succeeded
  or Failed with ``state.terminated`` exit code, reason and termination message: the file, at
  most 4096 bytes, or with ``FallbackToLogsOnError`` the log tail). ``restartPolicy``
  Always/OnFailure restart containers with a short back-off (0.5 s doubling to 10 s) and count
  ``restartCount``. Probes are ignored: a running container is ready.
- **Deletion.** A ``deletionTimestamp`` sends SIGTERM to the container process groups, SIGKILL
  after the grace period (capped at 10 s), then deletes the pod with grace 0 as a kubelet does;
  a pod deleted outright is killed at once. :meth:`NodeAgent.stop` kills every process.
- **Network.** Every pod shares this machine's network. Its IP is an address of its own in
  127.0.0.0/8 (:func:`pod_ip`, hostIP 127.0.0.1): a server that listens on the pod IP (from the
  downward API) is reachable there and does not collide with other pods, but two pods listening
  on 0.0.0.0 and one port do. With no kube-proxy or cluster DNS a Service name or ClusterIP
  does not reach anything; clients must be pointed at a loopback address.
- **Logs.** stdout+stderr of each container go to ``<pod dir>/logs/<container>.log`` (restarts
  append); ``kubectl logs`` cannot work without a kubelet, use :meth:`NodeAgent.pod_log`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from edgeloom.local.procs import die_with_parent, venv_executable
from edgeloom_testkit.controlplane import ControlPlane, render_kubeconfig, signal_process

log = logging.getLogger(__name__)

HOST_IP = "127.0.0.1"


def pod_ip(pod: Mapping[str, Any]) -> str:
    """The pod's own loopback address (127.a.b.c from its uid): servers that listen on their
    pod IP (``/metrics``) do not collide, and Prometheus scrapes each pod at its own IP."""
    digest = hashlib.sha256(pod["metadata"].get("uid", "").encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


MAX_GRACE_S = 10.0
MESSAGE_LIMIT = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
BACKOFF_RESET_S = 60.0
WATCH_TIMEOUT_S = 3
TOKEN_EXPIRATION_S = 24 * 3600
DEFAULT_MESSAGE_PATH = "/dev/termination-log"


class PodConfigError(RuntimeError):
    """A pod's container cannot be configured yet (missing ConfigMap, Secret, key...)."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- pure pieces: expansion, path mapping, field references, executables ---------------------


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` is a literal ``$``, unknown names stay as is."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : end]
                out.append(env.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


@dataclass(frozen=True)
class PathMap:
    """Container paths (mount paths, termination-message path) to local paths."""

    mappings: tuple[tuple[str, Path], ...] = ()

    def with_mapping(self, container_path: str, local: Path) -> PathMap:
        entries = (*self.mappings, (container_path.rstrip("/") or "/", local))
        return PathMap(tuple(sorted(entries, key=lambda e: len(e[0]), reverse=True)))

    def rewrite_path(self, value: str) -> str | None:
        """The local path for ``value`` if it is or lies under a mapped path, else None."""
        for container_path, local in self.mappings:
            if value == container_path:
                return str(local)
            if value.startswith(container_path + "/"):
                return str(local) + value[len(container_path) :]
        return None

    def rewrite(self, value: str) -> str:
        """``value`` with a leading mapped path, or the path after ``--flag=``, made local."""
        whole = self.rewrite_path(value)
        if whole is not None:
            return whole
        key, sep, rest = value.partition("=")
        if sep and key.startswith("-"):
            local = self.rewrite_path(rest)
            if local is not None:
                return f"{key}={local}"
        return value


def field_ref_value(pod: Mapping[str, Any], field_path: str) -> str:
    """The downward-API value of ``field_path`` for ``pod`` (its IP from :func:`pod_ip`)."""
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip(pod),
        "status.podIPs": pod_ip(pod),
        "status.hostIP": HOST_IP,
        "status.hostIPs": HOST_IP,
    }
    if field_path in simple:
        return str(simple[field_path])
    for prefix, key in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        values = meta.get(key) or {}
        if field_path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        if field_path.startswith(prefix + "['") and field_path.endswith("']"):
            return str(values.get(field_path[len(prefix) + 2 : -2], ""))
    raise PodConfigError(f"unsupported fieldRef {field_path!r}")


def resolve_executable(word: str, path_env: str) -> str:
    """``word`` made runnable here: bare names and missing absolute paths are looked up
    beside ``sys.executable``, then on ``path_env``; anything else is returned as given."""
    if "/" in word and (not os.path.isabs(word) or os.path.exists(word)):
        return word
    return venv_executable(os.path.basename(word), path_env) or word


def exit_code(returncode: int) -> int:
    """A Popen return code as a container runtime reports it (signal N is 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail(path: Path, max_bytes: int, max_lines: int) -> str:
    """The last ``max_lines`` lines of ``path``, at most ``max_bytes`` bytes."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-max_lines:])


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


# -- per-container runtime state -------------------------------------------------------------


@dataclass
class _Container:
    spec: dict[str, Any]
    init: bool
    log_path: Path
    message_path: Path
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    popen: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated["exitCode"])

    def status(self, uid: str) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.exit_code == 0 if self.init else self.running,
            "restartCount": self.restart_count,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "started": self.running,
        }
        if "waiting" not in self.state:
            status["containerID"] = f"edgeloom://{uid[:8]}-{self.name}-{self.restart_count}"
        return status


# -- one pod ---------------------------------------------------------------------------------


class _PodWorker:
    """Runs one pod: prepares it, supervises its containers, reports status, tears it down."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = agent.work_dir / "pods" / self.namespace / f"{self.name}_{self.uid[:8]}"
        self.restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.grace_s = MAX_GRACE_S
        self.delete_when_done = False
        self.gone = False  # the object no longer exists: report nothing
        self.finished = False
        self.dirty = True
        self.initialized = False
        self.started_at = now_rfc3339()
        self.volumes: dict[str, Path] = {}
        self.kubeconfig: Path | None = None
        self.config_error: str | None = None

        def make(spec: dict[str, Any], init: bool) -> _Container:
            name = spec["name"]
            return _Container(
                spec,
                init,
                self.dir / "logs" / f"{name}.log",
                self.dir / "containers" / name / "termination-log",
            )

        self.init_containers = [make(c, True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [make(c, False) for c in pod["spec"]["containers"]]
        self.thread = threading.Thread(
            target=self._run, name=f"pod {self.namespace}/{self.name}", daemon=True
        )

    # -- control from the agent --

    def request_stop(self, grace_s: float, delete: bool, gone: bool = False) -> bool:
        """Ask the pod to stop; returns True if it had already finished (caller cleans up)."""
        with self.lock:
            self.grace_s = min(self.grace_s, max(0.0, grace_s))
            self.delete_when_done = self.delete_when_done or delete
            self.gone = self.gone or gone
            finished = self.finished
        self.stopping.set()
        self.wake.set()
        return finished

    def notify(self) -> None:
        with self.lock:
            self.dirty = True
        self.wake.set()

    def container(self, name: str | None) -> _Container:
        everything = self.containers + self.init_containers
        if name is None:
            return self.containers[0]
        for c in everything:
            if c.name == name:
                return c
        raise KeyError(f"{self.namespace}/{self.name} has no container {name!r}")

    # -- the pod's thread --

    def _run(self) -> None:
        try:
            self._report()
            if self._prepare():
                self._run_containers()
            if self.stopping.is_set():
                self._terminate()
            self._report()
        except Exception:
            log.exception("pod %s/%s: node agent error", self.namespace, self.name)
            self._terminate()
        finally:
            with self.lock:
                self.finished = True
                delete = self.delete_when_done and not self.gone
            if delete:
                self.agent._delete_pod(self.namespace, self.name, self.uid)

    def _prepare(self) -> bool:
        """Materialize volumes and the service-account kubeconfig, retrying until stopped."""
        backoff = BACKOFF_START_S
        while not self.stopping.is_set():
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self.volumes = {
                    v["name"]: self.agent._materialize_volume(self.pod, v, self.dir / "volumes")
                    for v in self.pod["spec"].get("volumes") or []
                }
                self.kubeconfig = self.agent._service_account_kubeconfig(self.pod, self.dir)
                self.config_error = None
                return True
            except Exception as err:
                log.info("pod %s/%s not ready to start: %s", self.namespace, self.name, err)
                self.config_error = str(err)
                self.notify()
                self._report()
                self.stopping.wait(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX_S)
        return False

    def _run_containers(self) -> None:
        for c in self.init_containers:
            self._start(c)
            self._supervise([c])
            if self.stopping.is_set() or c.exit_code != 0:
                return
        with self.lock:
            self.initialized = True
            self.dirty = True
        for c in self.containers:
            self._start(c)
        self._supervise(self.containers)

    def _start(self, c: _Container) -> None:
        c.thread = threading.Thread(
            target=self._container_loop, args=(c,), name=f"{self.name}/{c.name}", daemon=True
        )
        c.thread.start()

    def _supervise(self, containers: list[_Container]) -> None:
        """Report status changes until these containers' threads end or the pod stops."""
        while True:
            self.wake.clear()
            if self.dirty:
                self._report()
            if self.stopping.is_set() or not any(
                c.thread and c.thread.is_alive() for c in containers
            ):
                return
            self.wake.wait(1.0)

    def _restarts(self, c: _Container, code: int) -> bool:
        if self.restart_policy == "Never":
            return False
        if self.restart_policy == "OnFailure" or c.init:
            return code != 0
        return True

    def _container_loop(self, c: _Container) -> None:
        """Start ``c``, wait for it, restart it per restartPolicy with a back-off.

        Runs in its own thread, which stays alive while the process does: PR_SET_PDEATHSIG
        fires when the spawning thread ends, not the spawning process.
        """
        backoff = BACKOFF_START_S
        while True:
            try:
                argv, env, cwd = self.agent._container_command(self, c)
            except Exception as err:
                if not isinstance(err, PodConfigError):
                    log.warning("pod %s/%s: %r", self.namespace, self.name, err)
                with self.lock:
                    c.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": str(err)}
                    }
                self.notify()
                if self.stopping.wait(backoff):
                    return
                backoff = min(2 * backoff, BACKOFF_MAX_S)
                continue
            ran_from = time.monotonic()
            popen = self._spawn(c, argv, env, cwd)
            if popen is not None:
                self._wait(c, popen)
            code = c.exit_code if c.exit_code is not None else 128
            if self.stopping.is_set() or not self._restarts(c, code):
                return
            if time.monotonic() - ran_from > BACKOFF_RESET_S:
                backoff = BACKOFF_START_S
            with self.lock:
                c.last_state = c.state
                message = f"back-off {backoff:g}s restarting failed container={c.name}"
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self.notify()
            if self.stopping.wait(backoff):
                return
            backoff = min(2 * backoff, BACKOFF_MAX_S)
            with self.lock:
                c.restart_count += 1

    def _spawn(
        self, c: _Container, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes] | None:
        """Start the container's process; None if the pod is stopping or the exec failed
        (recorded as a StartError termination with exit code 128)."""
        with self.lock:
            if self.stopping.is_set():
                return None
            c.message_path.parent.mkdir(parents=True, exist_ok=True)
            c.message_path.write_bytes(b"")
            c.log_path.parent.mkdir(parents=True, exist_ok=True)
            started = now_rfc3339()
            try:
                with c.log_path.open("ab") as logf:
                    c.popen = subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=die_with_parent,
                    )
                c.state = {"running": {"startedAt": started}}
            except OSError as err:
                c.popen = None
                c.state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": f"{argv[0]}: {err}",
                        "startedAt": started,
                        "finishedAt": now_rfc3339(),
                    }
                }
        self.notify()
        return c.popen

    def _wait(self, c: _Container, popen: subprocess.Popen[bytes]) -> None:
        """Wait for the process to exit and record its termination."""
        started = c.state["running"]["startedAt"]
        code = exit_code(popen.wait())
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        message = self._termination_message(c, code)
        if message:
            terminated["message"] = message
        with self.lock:
            c.state = {"terminated": terminated}
        self.notify()

    def _termination_message(self, c: _Container, code: int) -> str:
        try:
            with c.message_path.open("rb") as f:
                message = f.read(MESSAGE_LIMIT).decode(errors="replace")
        except OSError:
            message = ""
        policy = c.spec.get("terminationMessagePolicy", "File")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            message = log_tail(c.log_path, FALLBACK_LOG_BYTES, FALLBACK_LOG_LINES)
        return message

    def _terminate(self) -> None:
        """SIGTERM every container's process group, SIGKILL after the grace period, reap."""
        self.stopping.set()
        everything = self.init_containers + self.containers
        with self.lock:
            groups = [c.popen.pid for c in everything if c.popen and c.popen.returncode is None]
            grace = self.grace_s
        for pgid in groups:
            signal_process(pgid, signal.SIGTERM, group=True)
        deadline = time.monotonic() + grace
        for c in everything:
            if c.thread is not None:
                c.thread.join(max(0.0, deadline - time.monotonic()))
        for pgid in groups:
            signal_process(pgid, signal.SIGKILL, group=True)
        for c in everything:
            if c.thread is not None:
                c.thread.join()

    # -- status --

    def _phase(self, final: bool) -> str:
        failed_init = any(
            c.exit_code not in (None, 0) and not (c.thread and c.thread.is_alive())
            for c in self.init_containers
        )
        if failed_init and (final or self.restart_policy == "Never"):
            return "Failed"
        if not self.initialized:
            return "Failed" if final and self.stopping.is_set() else "Pending"
        if any(c.running for c in self.containers):
            return "Running"
        all_exited = all(c.exit_code is not None for c in self.containers)
        if final or (self.restart_policy == "Never" and all_exited):
            ok = all(c.exit_code == 0 for c in self.containers)
            return "Succeeded" if ok else "Failed"
        if self.restart_policy == "OnFailure" and all(c.exit_code == 0 for c in self.containers):
            return "Succeeded"
        if all(c.restart_count == 0 and "waiting" in c.state for c in self.containers):
            return "Pending"
        return "Running"

    def _status(self, final: bool) -> dict[str, Any]:
        with self.lock:
            self.dirty = False
            if self.config_error:
                for c in self.containers:
                    if "waiting" in c.state and c.restart_count == 0:
                        c.state = {
                            "waiting": {
                                "reason": "CreateContainerConfigError",
                                "message": self.config_error,
                            }
                        }
            phase = self._phase(final)
            ready = phase == "Running" and all(c.running for c in self.containers)
            init_statuses = [c.status(self.uid) for c in self.init_containers]
            statuses = [c.status(self.uid) for c in self.containers]
            initialized = self.initialized
        now = now_rfc3339()

        def condition(kind: str, value: bool) -> dict[str, Any]:
            return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": now}

        return {
            "phase": phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": pod_ip(self.pod),
            "podIPs": [{"ip": pod_ip(self.pod)}],
            "startTime": self.started_at,
            "initContainerStatuses": init_statuses,
            "containerStatuses": statuses,
            "conditions": [
                condition("PodReadyToStartContainers", True),
                condition("Initialized", initialized),
                condition("Ready", ready),
                condition("ContainersReady", ready),
            ],
        }

    def _report(self) -> None:
        with self.lock:
            if self.gone:
                return
            final = self.finished or (
                self.stopping.is_set()
                and not any(
                    c.thread and c.thread.is_alive() for c in self.init_containers + self.containers
                )
            )
        status = self._status(final)
        if not self.agent._write_pod_status(self.namespace, self.name, self.uid, status):
            with self.lock:
                self.gone = True


# -- the agent -------------------------------------------------------------------------------


class NodeAgent:
    """Watches pods on ``nodes`` and runs them locally (see the module docstring).

    Parameters
    ----------
    plane
        The control plane; the agent acts as its admin.
    nodes
        Node names this agent plays the kubelet for.
    work_dir
        Pod directories go under ``work_dir/pods/<namespace>/<name>_<uid8>``.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Tests read what the
    API cannot show without a kubelet through :meth:`pod_log`, :meth:`pod_dir`,
    :meth:`container_pid` and :meth:`container_state`.
    """

    def __init__(self, plane: ControlPlane, nodes: Iterable[str], work_dir: Path) -> None:
        self.plane = plane
        self.nodes = frozenset(nodes)
        self.work_dir = work_dir
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(plane.kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = 32
        self._api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self._api)
        self._lock = threading.Lock()
        self._workers: dict[str, _PodWorker] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch_loop, name="node-agent", daemon=True)
        self._synced = threading.Event()

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> NodeAgent:
        """Start watching; returns once the first pod list has been handled."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not self._synced.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"the node agent could not list pods in {timeout_s:g} s")
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop watching and kill every pod's processes (reported nothing further)."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.request_stop(grace_s, delete=False, gone=True)
        for w in workers:
            w.thread.join(grace_s + 10)
        if self._thread.is_alive():
            self._thread.join(WATCH_TIMEOUT_S + 5)
        leftovers = [
            c.popen
            for w in workers
            for c in w.init_containers + w.containers
            if c.popen is not None and c.popen.returncode is None
        ]
        for popen in leftovers:  # only if a worker thread hung
            signal_process(popen.pid, signal.SIGKILL, group=True)
            popen.wait()
        self._api.close()

    # -- what tests use --

    def _worker(self, namespace: str, name: str) -> _PodWorker:
        with self._lock:
            uid = self._by_name.get((namespace, name))
            if uid is None:
                raise KeyError(f"the node agent has not run pod {namespace}/{name}")
            return self._workers[uid]

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The local directory of the latest pod called ``namespace/name``."""
        return self._worker(namespace, name).dir

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        """A container's stdout+stderr so far (the first container when None)."""
        c = self._worker(namespace, name).container(container)
        try:
            return c.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def container_state(
        self, namespace: str, name: str, container: str | None = None
    ) -> dict[str, Any]:
        """The container's current state, as reported (``{"terminated": {...}}`` etc.)."""
        worker = self._worker(namespace, name)
        with worker.lock:
            return dict(worker.container(container).state)

    def container_pid(self, namespace: str, name: str, container: str | None = None) -> int | None:
        """PID of the container's current process while it runs, else None."""
        c = self._worker(namespace, name).container(container)
        popen = c.popen
        return popen.pid if popen is not None and c.running else None

    # -- the watch --

    def _list(self) -> str:
        listing = self._call(self.core.list_pod_for_all_namespaces)
        seen = set()
        for pod in listing["items"]:
            seen.add(pod["metadata"]["uid"])
            self._on_event("ADDED", pod)
        with self._lock:
            vanished = [w for uid, w in self._workers.items() if uid not in seen]
        for w in vanished:
            w.request_stop(0, delete=False, gone=True)
        self._synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch_loop(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                )
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._on_event(event["type"], obj)
                    if self._stop.is_set():
                        break
            except ApiException as err:
                if err.status != 410:
                    log.warning("node agent watch failed: %s", err)
                    self._stop.wait(1.0)
                version = None
            except Exception as err:
                if not self._stop.is_set():
                    log.warning("node agent watch failed: %r", err)
                    self._stop.wait(1.0)
                version = None

    def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        if pod["spec"].get("nodeName") not in self.nodes or self._stop.is_set():
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            worker = self._workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.request_stop(0, delete=False, gone=True)
            return
        if meta.get("deletionTimestamp"):
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            if worker is None or worker.request_stop(min(grace, MAX_GRACE_S), delete=True):
                self._delete_pod(meta["namespace"], meta["name"], uid)
            return
        if worker is None and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            worker = _PodWorker(self, pod)
            with self._lock:
                self._workers[uid] = worker
                self._by_name[(worker.namespace, worker.name)] = uid
            worker.thread.start()

    # -- API calls made for workers --

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a client method and return the response JSON as plain dicts and lists.

        The body is read to the end before the connection goes back to the pool; dropping an
        unread response closes the socket while the apiserver may still be writing.
        """
        response = method(*args, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def _delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod object at once, as kubelet does once its containers are gone."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body)
        except ApiException as err:
            if err.status not in (404, 409):
                log.warning("deleting pod %s/%s: %s", namespace, name, err)

    def _write_pod_status(
        self, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> bool:
        """Replace the pod's status (kept: scheduler conditions, qosClass); False if gone."""
        for _ in range(10):
            try:
                pod = self._call(self.core.read_namespaced_pod_status, name, namespace)
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
            if pod["metadata"]["uid"] != uid:
                return False
            old = pod.get("status") or {}
            kept = [
                c
                for c in old.get("conditions") or []
                if c["type"] not in {c2["type"] for c2 in status["conditions"]}
            ]
            merged = {**old, **status, "conditions": kept + status["conditions"]}
            for cond in merged["conditions"]:  # keep transition times of unchanged conditions
                before = next(
                    (c for c in old.get("conditions") or [] if c["type"] == cond["type"]), None
                )
                if before and before.get("status") == cond["status"]:
                    cond["lastTransitionTime"] = before.get("lastTransitionTime")
            if old.get("phase") in ("Succeeded", "Failed"):
                merged["phase"] = old["phase"]  # terminal phases never change
            pod["status"] = merged
            try:
                self._call(self.core.replace_namespaced_pod_status, name, namespace, body=pod)
                return True
            except ApiException as err:
                if err.status == 404:
                    return False
                if err.status != 409:
                    log.warning("pod %s/%s status: %s", namespace, name, err.body)
                    return True
        return True

    def _source(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        """The data of a ConfigMap or Secret as bytes; {} when missing and optional."""
        read = (
            self.core.read_namespaced_config_map
            if kind == "configMap"
            else self.core.read_namespaced_secret
        )
        try:
            obj = self._call(read, name, namespace)
        except ApiException as err:
            if err.status == 404 and optional:
                return {}
            if err.status == 404:
                raise PodConfigError(f"{kind} {namespace}/{name} not found") from None
            raise
        if kind == "configMap":
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            return data
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def _source_key(self, kind: str, namespace: str, ref: Mapping[str, Any]) -> str | None:
        optional = bool(ref.get("optional"))
        data = self._source(kind, namespace, ref["name"], optional)
        if ref["key"] not in data:
            if optional:
                return None
            raise PodConfigError(f"{kind} {namespace}/{ref['name']} has no key {ref['key']!r}")
        return data[ref["key"]].decode(errors="replace")

    def _token(self, pod: Mapping[str, Any], audience: str | None, expiration_s: int) -> str:
        meta = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": expiration_s,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        request = self._call(
            self.core.create_namespaced_service_account_token,
            pod["spec"]["serviceAccountName"],
            meta["namespace"],
            body,
        )
        return str(request["status"]["token"])

    def _write_items(
        self,
        data: Mapping[str, bytes],
        items: list[dict[str, Any]] | None,
        dest: Path,
        default_mode: int,
        what: str,
    ) -> None:
        if items is None:
            for key, value in data.items():
                _write_file(dest / key, value, default_mode)
            return
        for item in items:
            if item["key"] not in data:
                raise PodConfigError(f"{what} has no key {item['key']!r}")
            _write_file(dest / item["path"], data[item["key"]], item.get("mode", default_mode))

    def _downward_items(
        self, pod: Mapping[str, Any], items: list[dict[str, Any]], dest: Path, default_mode: int
    ) -> None:
        for item in items:
            if "fieldRef" in item:
                value = field_ref_value(pod, item["fieldRef"]["fieldPath"])
            else:
                ref = item["resourceFieldRef"]
                value = self._resource_value(pod, ref.get("containerName"), ref)
            _write_file(dest / item["path"], value.encode(), item.get("mode", default_mode))

    def _materialize_volume(
        self, pod: Mapping[str, Any], volume: dict[str, Any], root: Path
    ) -> Path:
        """Write one pod volume under ``root/<name>`` (see the module docstring); its path."""
        namespace = pod["metadata"]["namespace"]
        dest = root / volume["name"]
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            return path
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            path = self.work_dir / "claims" / namespace / claim
            path.mkdir(parents=True, exist_ok=True)
            return path
        dest.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            source = volume[kind]
            name = source["name"] if kind == "configMap" else source["secretName"]
            data = self._source(kind, namespace, name, bool(source.get("optional")))
            mode = source.get("defaultMode", 0o644)
            self._write_items(data, source.get("items"), dest, mode, f"{kind} {name}")
        elif "downwardAPI" in volume:
            source = volume["downwardAPI"]
            self._downward_items(pod, source["items"], dest, source.get("defaultMode", 0o644))
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            for src in volume["projected"].get("sources") or []:
                if "configMap" in src or "secret" in src:
                    kind = "configMap" if "configMap" in src else "secret"
                    ref = src[kind]
                    data = self._source(kind, namespace, ref["name"], bool(ref.get("optional")))
                    self._write_items(data, ref.get("items"), dest, mode, f"{kind} {ref['name']}")
                elif "downwardAPI" in src:
                    self._downward_items(pod, src["downwardAPI"]["items"], dest, mode)
                elif "serviceAccountToken" in src:
                    ref = src["serviceAccountToken"]
                    token = self._token(
                        pod, ref.get("audience"), ref.get("expirationSeconds", 3600)
                    )
                    _write_file(dest / ref["path"], token.encode(), mode)
        elif "emptyDir" not in volume:
            log.warning("volume %s: unsupported type, using an empty directory", volume["name"])
        return dest

    def _service_account_kubeconfig(self, pod: Mapping[str, Any], pod_dir: Path) -> Path | None:
        """Write a kubeconfig holding a pod-bound token of the pod's service account."""
        spec = pod["spec"]
        account = spec.get("serviceAccountName")
        if not account:
            return None
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            sa = self._call(
                self.core.read_namespaced_service_account, account, pod["metadata"]["namespace"]
            )
            automount = sa.get("automountServiceAccountToken")
        if automount is False:
            return None
        namespace = pod["metadata"]["namespace"]
        token = self._token(pod, None, TOKEN_EXPIRATION_S)
        kubeconfig = render_kubeconfig(
            self.plane.server,
            self.plane.ca_file.read_bytes(),
            token,
            f"system:serviceaccount:{namespace}:{account}",
            namespace,
        )
        path = pod_dir / "serviceaccount" / "kubeconfig"
        _write_file(path, yaml.safe_dump(kubeconfig).encode(), 0o600)
        return path

    def _resource_value(
        self, pod: Mapping[str, Any], container: str | None, ref: Mapping[str, Any]
    ) -> str:
        """A ``resourceFieldRef`` value: the container's limit/request, else node capacity."""
        containers = pod["spec"]["containers"]
        spec = next((c for c in containers if c["name"] == container), containers[0])
        kind, _, resource = ref["resource"].partition(".")
        quantity = (spec.get("resources") or {}).get(kind, {}).get(resource)
        if quantity is None and kind == "requests":
            quantity = "0"
        if quantity is None:
            node = self._call(self.core.read_node, pod["spec"]["nodeName"])
            quantity = node["status"]["allocatable"].get(resource, "0")
        divisor = parse_quantity(str(ref.get("divisor") or "1")) or 1  # "0" means 1
        return str(math.ceil(parse_quantity(str(quantity)) / divisor))

    def _container_command(
        self, worker: _PodWorker, c: _Container
    ) -> tuple[list[str], dict[str, str], Path]:
        """argv, environment and working directory of container ``c`` of ``worker``'s pod."""
        pod, spec = worker.pod, c.spec
        namespace = pod["metadata"]["namespace"]
        declared: dict[str, str] = {}
        for src in spec.get("envFrom") or []:
            kind = "configMap" if "configMapRef" in src else "secret"
            ref = src[f"{kind}Ref"]
            data = self._source(kind, namespace, ref["name"], bool(ref.get("optional")))
            for key, value in data.items():
                if "=" not in key:
                    declared[src.get("prefix", "") + key] = value.decode(errors="replace")
        for var in spec.get("env") or []:
            value: str | None
            if "valueFrom" not in var:
                value = expand_vars(var.get("value", ""), declared)
            else:
                source = var["valueFrom"]
                if "secretKeyRef" in source:
                    value = self._source_key("secret", namespace, source["secretKeyRef"])
                elif "configMapKeyRef" in source:
                    value = self._source_key("configMap", namespace, source["configMapKeyRef"])
                elif "fieldRef" in source:
                    value = field_ref_value(pod, source["fieldRef"]["fieldPath"])
                elif "resourceFieldRef" in source:
                    ref = source["resourceFieldRef"]
                    value = self._resource_value(pod, ref.get("containerName", c.name), ref)
                else:
                    raise PodConfigError(f"env {var['name']}: unsupported valueFrom {source}")
            if value is not None:
                declared[var["name"]] = value

        paths = PathMap().with_mapping(
            spec.get("terminationMessagePath", DEFAULT_MESSAGE_PATH), c.message_path
        )
        for mount in spec.get("volumeMounts") or []:
            if mount["name"] not in worker.volumes:
                raise PodConfigError(f"volumeMount {mount['name']!r} names no volume")
            local = worker.volumes[mount["name"]]
            sub = mount.get("subPath") or expand_vars(mount.get("subPathExpr", ""), declared)
            paths = paths.with_mapping(mount["mountPath"], local / sub if sub else local)
        declared = {k: paths.rewrite(v) for k, v in declared.items()}

        env = {
            k: v
            for k, v in os.environ.items()
            if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")
        }
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["HOSTNAME"] = worker.name
        env["PYTHONUNBUFFERED"] = "1"
        if worker.kubeconfig is not None:
            env["KUBECONFIG"] = str(worker.kubeconfig)
        env.update(declared)

        words = [
            paths.rewrite(expand_vars(w, declared))
            for w in [*(spec.get("command") or []), *(spec.get("args") or [])]
        ]
        if not words:
            raise PodConfigError(f"container {c.name}: no command or args to run")
        words[0] = resolve_executable(words[0], env["PATH"])
        workdir = paths.rewrite_path(spec.get("workingDir") or "")
        return words, env, Path(workdir) if workdir else worker.dir
