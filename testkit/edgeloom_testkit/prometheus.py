"""A real Prometheus server for the test tiers (Debian's ``prometheus`` package).

:func:`kubernetes_pods_job` is the usual annotation-based ``kubernetes-pods`` scrape job (pods
with ``prometheus.io/scrape: "true"``, port and path from the annotations, target labels
``namespace``, ``pod``, the pods' ``app.kubernetes.io/*`` labels and their ``edgeloom.io/*``
labels as ``edgeloom_*``), the set-up
``docs/observability.md`` documents for clusters without the Prometheus Operator; its targets
come from :class:`PodDiscovery`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from edgeloom.local.procs import die_with_parent
from edgeloom_testkit.controlplane import ControlPlane, free_port, stop_process, wait_for

log = logging.getLogger(__name__)


def kubernetes_pods_job(targets_file: Path, interval: str = "1s") -> dict[str, Any]:
    """Scrape config of annotated pods, with the relabelling of a ``kubernetes_sd_configs``
    pod job; the targets come from ``targets_file`` (:class:`PodDiscovery` fills it)."""
    return {
        "job_name": "kubernetes-pods",
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                "regex": "true",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Pending|Succeeded|Failed",
                "action": "drop",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                "regex": "(.+)",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": [
                    "__meta_kubernetes_pod_ip",
                    "__meta_kubernetes_pod_annotation_prometheus_io_port",
                ],
                "regex": "(.+);(\\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "regex": "__meta_kubernetes_pod_label_(app_kubernetes_io_.+)",
                "action": "labelmap",
            },
            {  # edgeloom.io/kind, job, role, run: edgeloom_kind, ... (the chart's PodMonitor too)
                "regex": "__meta_kubernetes_pod_label_edgeloom_io_(.+)",
                "replacement": "edgeloom_$1",
                "action": "labelmap",
            },
        ],
    }


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups with the ``__meta_kubernetes_pod_*`` labels Prometheus'
    Kubernetes pod discovery sets: one target per container port, the pod IP alone without."""
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if not status.get("podIP"):
            continue
        labels = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_ip": status["podIP"],
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_node_name": (pod.get("spec") or {}).get("nodeName", ""),
        }
        for key, value in (meta.get("labels") or {}).items():
            labels[f"__meta_kubernetes_pod_label_{_label_name(key)}"] = value
        for key, value in (meta.get("annotations") or {}).items():
            labels[f"__meta_kubernetes_pod_annotation_{_label_name(key)}"] = value
        ports = [
            port["containerPort"]
            for container in pod["spec"]["containers"]
            for port in container.get("ports") or []
        ]
        addresses = [f"{status['podIP']}:{p}" for p in ports] or [status["podIP"]]
        groups.extend({"targets": [a], "labels": labels} for a in addresses)
    return groups


class PodDiscovery:
    """Keeps ``targets_file`` in step with the pods of a control plane, once a second.

    Debian's ``prometheus`` is built without the Kubernetes service discovery, so this stands
    in for it: the pods come from the real API server and get the labels that discovery would
    give them; the scrape job's relabelling (:func:`kubernetes_pods_job`) is the real one.
    """

    def __init__(self, plane: ControlPlane, targets_file: Path, period_s: float = 1.0) -> None:
        self.plane, self.targets_file, self.period_s = plane, targets_file, period_s
        self._stop = threading.Event()
        self.write()
        self._thread = threading.Thread(target=self._run, name="pod-discovery", daemon=True)
        self._thread.start()

    def write(self) -> None:
        pods = self.plane.kubectl_json("get", "pods", "-A")["items"]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pod_targets(pods)))
        tmp.replace(self.targets_file)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.write()
            except Exception as err:  # the API server may be busy: try again next period
                log.warning("pod discovery failed: %s", err)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Prometheus:
    """One Prometheus process on a free loopback port, with its own TSDB under ``work_dir``."""

    def __init__(
        self,
        work_dir: Path,
        scrape_configs: list[dict[str, Any]],
        rules: dict[str, Any] | None = None,
        evaluation_interval: str = "1s",
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run scripts/install-test-tools.sh")
        work_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"evaluation_interval": evaluation_interval},
            "scrape_configs": scrape_configs,
        }
        if rules is not None:
            (work_dir / "rules.yaml").write_text(yaml.safe_dump(rules))
            config["rule_files"] = [str(work_dir / "rules.yaml")]
        (work_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = work_dir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={work_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        try:
            wait_for(self._ready, 60, "Prometheus ready", 0.2)
        except Exception:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>``; returns ``data``, raises on an error answer."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                payload = json.loads(r.read())
        except urllib.error.HTTPError as err:
            payload = json.loads(err.read() or b"{}")
        if payload.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {payload.get('error', payload)}")
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return list(self.api("query_range", query=expr, start=start, end=end, step=step)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts now pending or firing."""
        return list(self.api("alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health and last evaluation error."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def stop(self) -> None:
        stop_process(self.process, grace_s=10)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def cluster_prometheus(
    plane: ControlPlane, work_dir: Path, rules: dict[str, Any] | None = None
) -> Iterator[Prometheus]:
    """A Prometheus scraping every annotated pod of ``plane`` (:class:`PodDiscovery` and
    :func:`kubernetes_pods_job`), with alerting ``rules`` if given."""
    discovery = PodDiscovery(plane, work_dir / "pods.json")
    try:
        with Prometheus(work_dir, [kubernetes_pods_job(work_dir / "pods.json")], rules) as server:
            yield server
    finally:
        discovery.stop()
