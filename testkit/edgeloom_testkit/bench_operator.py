"""``edgeloom bench operator``: reconcile latency of the operator on a real control plane.

Part of the test kit, not of the shipped package, because it needs the kit's control plane; it
registers with the harness through the ``edgeloom.benchmarks`` entry point (testkit/pyproject.toml).

Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(:mod:`edgeloom_testkit.controlplane`), registers the fake nodes, installs the CRDs, runs the
operator as its own process (``kopf run``, as the chart's Deployment does) against a real
nats-server, then applies N resources in one ``kubectl apply``. Watches in this process time,
per resource, creation → every child Job exists and creation → first status written. No node
agent runs, so pods stay scheduled but not started: the figures are the operator's own work.
The operator's CPU time and peak RSS come from /proc.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgeloom.api.registry import kinds
from edgeloom.bench import Benchmark, BenchResult, Case, CaseResult, benchmark
from edgeloom.bench.plot import method_lines, panels
from edgeloom.local.nats_server import NatsServer
from edgeloom_testkit.controlplane import (
    REPO_ROOT,
    ControlPlane,
    free_port,
    register_nodes,
    start_control_plane,
    wait_for,
)

EXAMPLES = {
    "SplitTrainingJob": REPO_ROOT / "examples" / "splittraining-mnist1d.yaml",
    "PruneJob": REPO_ROOT / "examples" / "prunejob-minilm.yaml",
}
PLURALS = {"SplitTrainingJob": "splittrainingjobs", "PruneJob": "prunejobs"}


def namespace_of(kind: str) -> str:
    """Each case in its own namespace, so one case's resources never touch the next's."""
    return f"bench-{kind.lower()}"


def resources(kind: str, count: int) -> list[dict[str, Any]]:
    base = yaml.safe_load(EXAMPLES[kind].read_text())
    out = []
    for i in range(count):
        obj = yaml.safe_load(yaml.safe_dump(base))
        obj["metadata"] = {
            "name": f"{base['metadata']['name']}-{i:03d}",
            "namespace": namespace_of(kind),
        }
        out.append(obj)
    return out


class Timeline:
    """First-seen times (this process's monotonic clock) of resources, statuses and Jobs."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.created: dict[str, float] = {}
        self.status: dict[str, float] = {}
        self.jobs: dict[str, dict[str, float]] = defaultdict(dict)
        self.lock = threading.Lock()

    def watch_resources(self, plane: ControlPlane, plural: str, stop: threading.Event) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(plane.api_client())
        w = watch.Watch()
        while not stop.is_set():
            for event in w.stream(
                api.list_namespaced_custom_object,
                "edgeloom.io",
                "v1alpha1",
                self.namespace,
                plural,
                timeout_seconds=2,
            ):
                now, obj = time.monotonic(), event["object"]
                name = obj["metadata"]["name"]
                with self.lock:
                    self.created.setdefault(name, now)
                    if (obj.get("status") or {}).get("phase"):
                        self.status.setdefault(name, now)

    def watch_jobs(self, plane: ControlPlane, stop: threading.Event) -> None:
        from kubernetes import client, watch

        api = client.BatchV1Api(plane.api_client())
        w = watch.Watch()
        while not stop.is_set():
            for event in w.stream(api.list_namespaced_job, self.namespace, timeout_seconds=2):
                now, job = time.monotonic(), event["object"]
                owner = (job.metadata.labels or {}).get("edgeloom.io/job")
                if owner:
                    with self.lock:
                        self.jobs[owner].setdefault(job.metadata.name, now)


class ProcessSampler:
    """CPU seconds and peak RSS of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self, field: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        if found is None:
            raise RuntimeError(f"/proc/{self.pid}/status has no {field}")
        return int(found.group(1)) * 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def start_operator(plane: ControlPlane, nats_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "EDGELOOM_NATS_URL": nats_url,
        "PYTHONUNBUFFERED": "1",
    }
    kopf = Path(sys.executable).parent / "kopf"
    proc = subprocess.Popen(
        [
            str(kopf),
            "run",
            "--standalone",
            "--all-namespaces",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            "-m",
            "edgeloom_operators.main",
        ],
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        import urllib.request

        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except OSError:
            return False
        return True

    wait_for(healthy, 120, "the operator's liveness endpoint")
    return proc


def measure(plane: ControlPlane, kind: str, count: int, operator_pid: int) -> dict[str, Any]:
    """Apply ``count`` resources of ``kind`` at once and time the operator's reconciles."""
    objs = resources(kind, count)
    expected_jobs = len(_jobs_of(kind, objs[0]))
    timeline, stop = Timeline(namespace_of(kind)), threading.Event()
    watchers = [
        threading.Thread(
            target=timeline.watch_resources, args=(plane, PLURALS[kind], stop), daemon=True
        ),
        threading.Thread(target=timeline.watch_jobs, args=(plane, stop), daemon=True),
    ]
    for t in watchers:
        t.start()
    time.sleep(1.0)  # the watches are open before the burst
    sampler = ProcessSampler(operator_pid)
    cpu_before = sampler.cpu_seconds()
    started = time.monotonic()
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs), timeout=300)

    def done() -> bool:
        with timeline.lock:
            return len(timeline.status) == count and all(
                len(timeline.jobs[o["metadata"]["name"]]) == expected_jobs for o in objs
            )

    wait_for(done, 600, f"{count} {kind} resources reconciled")
    elapsed = time.monotonic() - started
    cpu = sampler.cpu_seconds() - cpu_before
    stop.set()
    children, status = [], []
    with timeline.lock:
        for o in objs:
            name = o["metadata"]["name"]
            created = timeline.created[name]
            children.append(max(timeline.jobs[name].values()) - created)
            status.append(timeline.status[name] - created)
    return {
        **{f"children_p{q}_s": round(percentile(children, q), 4) for q in (50, 95, 99)},
        **{f"status_p{q}_s": round(percentile(status, q), 4) for q in (50, 95, 99)},
        "children_max_s": round(max(children), 4),
        "status_max_s": round(max(status), 4),
        "burst_s": round(elapsed, 3),
        "operator_cpu_s": round(cpu, 3),
        "operator_cpu_ratio": round(cpu / elapsed, 4),
        "rss_bytes": sampler.memory("VmRSS"),
        "peak_memory_bytes": sampler.memory("VmHWM"),
        "children_latencies_s": [round(v, 4) for v in children],
        "status_latencies_s": [round(v, 4) for v in status],
    }


def _jobs_of(kind: str, obj: dict[str, Any]) -> list[str]:
    if kind == "SplitTrainingJob":
        return ["server", *(g["name"] for g in obj["spec"]["workers"])]
    return ["pruner"]


def _log_counts(log_text: str) -> dict[str, int]:
    return {
        "errors": len(re.findall(r"\bERROR\b|Traceback", log_text)),
        "retries": len(re.findall(r"will retry|Retrying", log_text)),
        "conflicts": len(re.findall(r"\b409\b|Conflict", log_text)),
    }


def _first_errors(log_text: str, lines: int = 30) -> str:
    start = re.search(r"\bERROR\b|Traceback", log_text)
    return "\n".join(log_text[start.start() :].splitlines()[:lines]) if start else ""


@dataclass
class Session:
    """The control plane with the CRDs and one namespace per kind, and the operator."""

    plane: ControlPlane
    operator: subprocess.Popen[bytes]
    log_path: Path


@benchmark("operator")
class OperatorBenchmark(Benchmark[Session]):
    """Reconcile latency of the operator on a real control plane (needs make controlplane)."""

    @property
    def count(self) -> int:
        return 10 if self.quick else 100

    def cases(self) -> list[Case]:
        return [
            Case(
                f"{kind.lower()}-{self.count}",
                {
                    "kind": kind,
                    "resources": self.count,
                    "jobs_per_resource": len(_jobs_of(kind, resources(kind, 1)[0])),
                    "cores": os.cpu_count(),
                },
            )
            for kind in EXAMPLES
        ]

    def methods(self) -> list[str]:
        return ["edgeloom-operator"]

    @contextmanager
    def session(self) -> Iterator[Session]:
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeloom-bench-")))
            plane = stack.enter_context(start_control_plane(work / "cluster"))
            nats = stack.enter_context(NatsServer())
            register_nodes(plane)
            plane.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
            plane.kubectl("wait", "--for=condition=Established", "crd", "--all", timeout=120)
            for info in kinds().values():  # served, not just established: the operator
                wait_for(functools.partial(_served, plane, info.plural), 60, info.plural)
            for kind in EXAMPLES:
                plane.kubectl("create", "namespace", namespace_of(kind))
            log_path = work / "operator.log"
            operator = start_operator(plane, nats.url, log_path)
            stack.callback(stop_operator, operator)
            yield Session(plane, operator, log_path)

    def run_case(self, case: Case, methods: Sequence[str], session: Session) -> CaseResult:
        kind = case.params["kind"]
        print(f"applying {self.count} {kind} resources at once", file=sys.stderr)
        log_start = session.log_path.stat().st_size
        figures = measure(session.plane, kind, self.count, session.operator.pid)
        burst_log = session.log_path.read_bytes()[log_start:].decode(errors="replace")
        figures |= _log_counts(burst_log)
        if figures["errors"]:
            print(_first_errors(burst_log), file=sys.stderr)
        print(
            f"{kind}: children p99 {figures['children_p99_s']:.3f} s, status p99 "
            f"{figures['status_p99_s']:.3f} s, operator CPU "
            f"{figures['operator_cpu_s']:.1f} s, peak "
            f"{figures['peak_memory_bytes'] / 2**20:.0f} MiB",
            file=sys.stderr,
        )
        return CaseResult({"edgeloom-operator": figures})

    def plot(self, result: BenchResult, path: Path) -> None:
        """Latency CDFs: creation → children and creation → status, one line per case."""
        title = f"{result.command}: {result.cases[0]['params']['resources']} resources at once"
        with panels(path, 2, (5.5, 4.2), title=title) as axes:
            for ax, metric, label in (
                (axes[0], "children_latencies_s", "create → every child Job exists"),
                (axes[1], "status_latencies_s", "create → first status written"),
            ):
                curves = {}
                for case in result.cases:
                    values = sorted(case["results"]["edgeloom-operator"][metric])
                    curves[case["case"]] = (
                        values,
                        [(i + 1) / len(values) for i in range(len(values))],
                    )
                method_lines(ax, curves, steps=True)
                ax.axvline(2.0, color="grey", ls="--", label="goal: p99 < 2 s")
                ax.set(title=label, xlabel="seconds", ylabel="fraction of resources")
                ax.legend(fontsize=8)


def _served(plane: ControlPlane, plural: str) -> bool:
    return plane.kubectl("get", plural, "-A").returncode == 0


def stop_operator(operator: subprocess.Popen[bytes]) -> None:
    operator.terminate()
    try:
        operator.wait(15)
    except subprocess.TimeoutExpired:
        operator.kill()
        operator.wait()
