"""Metrics, dashboards, alerts and the operator's worker-health loop with a real Prometheus.

The chart is installed with ``prometheus.url`` pointing at a real Prometheus that scrapes the
pods the real API server lists (the annotation-based ``kubernetes-pods`` job) and loads the
chart's alert rules with short thresholds. A SplitTrainingJob runs; one worker process is
stopped (SIGSTOP): its metrics go stale, the operator marks and replaces it within a bounded
time, the alerts fire, and the job still succeeds. A reconcile fails in a namespace whose quota
forbids Secrets, and a PruneJob runs. Every alert rule must have fired on the way, and every
dashboard panel's query must return series over the test's time range.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.registry import kinds
from edgeloom_testkit.controlplane import ControlPlane, wait_for
from edgeloom_testkit.dashboards import alert_rules, dashboard_queries
from edgeloom_testkit.node_agent import NodeAgent
from edgeloom_testkit.prometheus import Prometheus, cluster_prometheus
from edgeloom_testkit.secure_nats import secure_nats

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "edgeloom-observability"
REACTION_BOUND_S = 60.0
"""unhealthyAfterSeconds (6) + check interval (2) + scrape interval and reconcile slack."""

pytestmark = pytest.mark.timeout(1500)

JOB = {
    "apiVersion": "edgeloom.io/v1alpha1",
    "kind": "SplitTrainingJob",
    "metadata": {"name": "watched"},
    "spec": {
        "method": "mergesfl",
        "model": {"architecture": "cnn1d"},
        "dataset": {"name": "mnist1d", "samples": 2000},
        "workers": [{"name": "edge", "count": 4}],
        "training": {"rounds": 40, "iterationsPerRound": 5, "totalBatchSize": 128},
        "participation": {
            "minWorkers": 2,
            "roundDeadlineSeconds": 15,
            "onUnhealthyWorker": "replace",
            "unhealthyAfterSeconds": 6,
        },
    },
}
ALERT_VALUES = {
    "monitoring": {
        "prometheusRule": {
            "stalledFor": "5s",
            "staleFor": "2s",
            "workersDroppedWindow": "10m",
            "reconcileErrorsFor": "1s",
            "operatorAbsentFor": "1s",
        }
    }
}


@pytest.fixture(scope="module")
def prometheus(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    work = tmp_path_factory.mktemp("prometheus")
    with cluster_prometheus(control_plane, work, alert_rules(ALERT_VALUES)) as server:
        yield server


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    prometheus: Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    plane = control_plane
    with secure_nats(tmp_path_factory.mktemp("nats")) as nats:
        plane.install_edgeloom(
            "observed",
            SYSTEM,
            nats,
            f"prometheus.url={prometheus.url}",
            "prometheus.checkIntervalSeconds=2",
        )
        yield "observed"
        plane.helm("uninstall", "observed", "-n", SYSTEM, "--wait", check=False, timeout=120)
        plane.kubectl("delete", "namespace", SYSTEM, "--wait=false", check=False)


class AlertWatcher:
    """Records the name of every alert Prometheus reports pending or firing, twice a second."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.prometheus, self.seen = prometheus, set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.seen.update(a["labels"]["alertname"] for a in self.prometheus.alerts())

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def status_of(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return plane.kubectl_json("get", kind, name, "-n", namespace).get("status") or {}


def workers_condition(
    plane: ControlPlane, name: str, namespace: str, value: str
) -> dict[str, Any] | None:
    """The WorkersHealthy condition once its status is ``value`` (the operator records the
    event first and patches the status right after)."""
    for condition in status_of(plane, "stj", name, namespace).get("conditions", []):
        if condition["type"] == "WorkersHealthy" and condition["status"] == value:
            return condition
    return None


def running_workers(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    items = plane.kubectl_json(
        "get", "pods", "-n", namespace, "-l", "edgeloom.io/job=watched,edgeloom.io/role=worker"
    )["items"]
    return {
        p["metadata"]["name"]: p
        for p in items
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def warning_events(plane: ControlPlane, namespace: str, name: str) -> list[str]:
    items = plane.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return [e["message"] for e in items if e["reason"] == "WorkerUnhealthy"]


def test_a_stopped_worker_is_replaced_alerts_fire_and_every_dashboard_has_data(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    prometheus: Prometheus,
    installed: str,
    namespace: str,
) -> None:
    plane = control_plane
    started = time.time()
    alerts = AlertWatcher(prometheus)
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(JOB))
    wait_for(
        lambda: (
            (status_of(plane, "stj", "watched", namespace).get("progress") or {}).get("round", 0)
            >= 3
        ),
        600,
        "three rounds",
        1.0,
    )
    scraped = f'up{{namespace="{namespace}",pod=~"watched-worker-.+"}} == 1'
    wait_for(lambda: len(prometheus.query(scraped)) == 4, 60, "four workers scraped", 0.5)
    wait_for(
        lambda: workers_condition(plane, "watched", namespace, "True"), 30, "WorkersHealthy=True"
    )

    victim, pod = sorted(running_workers(plane, namespace).items())[0]
    index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
    pid = node_agent.container_pid(namespace, victim)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # hung: no scrape, no reply to the server
    stopped = time.monotonic()

    def reacted() -> list[str]:
        return [m for m in warning_events(plane, namespace, "watched") if victim in m]

    message = wait_for(reacted, REACTION_BOUND_S, "the operator's reaction", 0.5)[0]
    reaction_s = time.monotonic() - stopped
    print(f"operator reacted {reaction_s:.1f} s after the worker stopped: {message}")
    assert "metrics" in message.lower() or "scraped" in message
    condition = wait_for(
        lambda: workers_condition(plane, "watched", namespace, "False"), 30, "WorkersHealthy=False"
    )
    assert condition["reason"] == "MetricsStale"
    assert victim in condition["message"]

    def replaced() -> bool:
        workers = running_workers(plane, namespace)
        return victim not in workers and index in {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            for p in workers.values()
        }

    wait_for(replaced, 120, "a replacement of the stopped worker")
    plane.kubectl(
        "wait",
        "stj/watched",
        "-n",
        namespace,
        "--for=condition=Ready",
        "--timeout=600s",
        timeout=660,
    )
    done = status_of(plane, "stj", "watched", namespace)
    assert done["phase"] == "Succeeded"
    actions = prometheus.query(
        f'edgeloom_operator_worker_actions_total{{namespace="{SYSTEM}",kind="SplitTrainingJob",outcome="replaced"}}'
    )
    assert actions and float(actions[0]["value"][1]) >= 1

    # a namespace whose quota forbids Secrets: the operator's reconcile fails there
    refused = f"{namespace}-quota"
    plane.kubectl("create", "namespace", refused)
    plane.kubectl("create", "quota", "no-secrets", "--hard=count/secrets=0", "-n", refused)
    prune = yaml.safe_load((ROOT / "examples" / "prunejob-minilm.yaml").read_text())
    plane.kubectl("apply", "-n", refused, "-f", "-", input=yaml.safe_dump(prune))
    errors = f'edgeloom_operator_reconciles_total{{namespace="{SYSTEM}",outcome="error"}} > 0'
    wait_for(lambda: prometheus.query(errors), 60, "a reconcile error scraped", 0.5)
    plane.kubectl("delete", "namespace", refused, "--wait=false")

    prune["spec"]["calibration"]["samples"] = 16
    prune["spec"]["evaluation"]["samples"] = 32
    prune_name = prune["metadata"]["name"]
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(prune))
    doomed = {  # its model folder does not exist: it fails
        **prune,
        "metadata": {"name": "doomed"},
        "spec": {**prune["spec"], "model": {"path": "/nonexistent/model"}},
    }
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doomed))
    plane.kubectl(
        "wait",
        f"prunejob/{prune_name}",
        "-n",
        namespace,
        "--for=condition=Ready",
        "--timeout=600s",
        timeout=660,
    )
    # Ready waits for the pruner's Job, which completes after the pod's metrics linger: the
    # final sample was scraped while the pod lingered, so look back over the run
    done = f'edgeloom_stage{{namespace="{namespace}",name="{prune_name}",stage="Done"}}'
    done_stage = f"max_over_time({done}[15m]) == 1"
    wait_for(lambda: prometheus.query(done_stage), 30, "the finished pruner scraped", 0.5)

    plane.kubectl(
        "wait",
        "prunejob/doomed",
        "-n",
        namespace,
        "--for=jsonpath={.status.phase}=Failed",
        "--timeout=300s",
        timeout=330,
    )
    failed = (
        f'edgeloom_operator_resource_phase{{kind="PruneJob", resource_namespace="{namespace}",'
        ' name="doomed", phase="Failed"} == 1'
    )
    wait_for(lambda: prometheus.query(failed), 30, "the failed PruneJob's series", 0.5)

    step = 2.0
    end = time.time() + step  # the grid's last point falls after the final scrape
    empty = []
    ran = ("SplitTrainingJob", "PruneJob")
    others = [k for k in kinds() if k not in ran]  # their own e2e tests run them
    for board_job, kind in (("watched", "SplitTrainingJob"), (prune_name, "PruneJob")):
        run = plane.kubectl_json("get", kind, board_job, "-n", namespace)["metadata"]["uid"]
        queries = dashboard_queries(namespace, board_job, operator_namespace=SYSTEM, run=run)
        for query in queries:
            if not (query.dashboard.endswith(kind) or query.dashboard.endswith("Operator")):
                continue
            if any(f'kind="{other}"' in query.expr for other in others):
                continue  # the operator's table of a kind this test does not run
            if not prometheus.query_range(query.expr, started, end, step):
                empty.append(str(query))
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # deleted resources leave the operator's gauges (the finalizer's, too: no child event
    # follows its release to refresh the resource)
    plane.kubectl(
        "delete",
        "stj/watched",
        f"prunejob/{prune_name}",
        "prunejob/doomed",
        "-n",
        namespace,
        "--timeout=120s",
        timeout=150,
    )
    ours = f'{{namespace="{SYSTEM}"}}'

    def forgotten() -> bool:
        series = prometheus.query(f"edgeloom_operator_resource_phase{ours}")
        counts = prometheus.query(f"sum(edgeloom_operator_resources{ours}) > 0")
        return not series and not counts

    wait_for(forgotten, 60, "the deleted resources gone from the operator's gauges", 0.5)

    # an absent operator: nothing up for this release's operator
    operator = {"-n": SYSTEM, "-l": "app.kubernetes.io/component=operator"}
    selector = [arg for pair in operator.items() for arg in pair]
    plane.kubectl("scale", "deployment", *selector, "--replicas=0")
    wait_for(lambda: "EdgeloomOperatorAbsent" in alerts.seen, 120, "EdgeloomOperatorAbsent", 1.0)
    plane.kubectl("scale", "deployment", *selector, "--replicas=1")
    wait_for(
        lambda: plane.kubectl_json("get", "deployment", *selector)["items"][0]["status"].get(
            "readyReplicas"
        ),
        180,
        "the operator back",
        1.0,
    )

    broken = [r for r in prometheus.rules() if r.get("health") != "ok"]
    assert not broken, broken
    wanted = {r["name"] for r in prometheus.rules() if r["type"] == "alerting"}
    assert len(wanted) == 6
    assert alerts.stop() == wanted  # every alert rule fired on this run's real series


def test_a_straggler_is_reported_once_and_kept_under_the_report_policy(
    control_plane: ControlPlane, installed: str, namespace: str
) -> None:
    plane = control_plane
    job = {
        **JOB,
        "metadata": {"name": "uneven"},
        "spec": {
            **JOB["spec"],
            "workers": [
                {"name": "fast", "count": 3},
                {
                    "name": "slow",
                    "count": 1,
                    "profile": {"computeSlowdown": 50, "uplinkBytesPerSecond": 2.0e5},
                },
            ],
            "ablation": {"batchRegulation": False},  # equal batches: the slow one stays slow
            "participation": {
                **JOB["spec"]["participation"],
                "onUnhealthyWorker": "report",
                "stragglerFactor": 2,
            },
        },
    }
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
    selector = "edgeloom.io/job=uneven,edgeloom.io/role=worker"

    def slow_pod() -> str | None:
        items = plane.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
        names = [p["metadata"]["name"] for p in items if "-slow-" in p["metadata"]["name"]]
        return names[0] if names else None

    slow = wait_for(slow_pod, 120, "the slow worker's pod")

    def reported() -> list[str]:
        return [m for m in warning_events(plane, namespace, "uneven") if slow in m]

    (message,) = wait_for(reported, 240, "the straggler reported", 1.0)
    assert "peers' median" in message and "reported only" in message
    condition = wait_for(
        lambda: workers_condition(plane, "uneven", namespace, "False"), 30, "WorkersHealthy=False"
    )
    assert condition["reason"] == "Straggler"
    pod = plane.kubectl_json("get", "pod", slow, "-n", namespace)
    assert pod["metadata"]["annotations"]["edgeloom.io/unhealthy"].startswith("Straggler: ")
    assert not pod["metadata"].get("deletionTimestamp")  # report: the pod stays
    time.sleep(6)  # three more checks (every 2 s): still one event for the pod
    assert len(reported()) == 1
    plane.kubectl("delete", "stj", "uneven", "-n", namespace, "--wait=false")
