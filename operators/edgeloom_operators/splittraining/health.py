"""Worker health of SplitTrainingJobs, on Prometheus data (a slow loop of the operator).

For each running job, every health interval:

1. **Stale metrics.** Prometheus scraped a worker pod successfully at some point in the last
   hour but not once in the last ``participation.unhealthyAfterSeconds`` (``up`` stayed 0):
   the process is hung, stopped or cut off.
2. **Stragglers.** The server exports each worker's device compute and transfer time of its
   last round (``edgeloom_worker_compute_seconds`` / ``_transfer_seconds``). A worker whose
   sum, averaged over the same window, exceeds ``participation.stragglerFactor`` times the
   median of its peers' is a straggler (only with three or more workers reporting, so there
   is a majority to compare with, and only once its pod is older than the window, so a
   replacement is not judged on its predecessor's rounds).

The Prometheus target labels ``namespace`` and ``pod`` are expected, as the chart's PodMonitor
and the usual ``kubernetes-pods`` annotation scrape job set them. Everything here is pure; the
loop in :mod:`edgeloom_operators.splittraining.plugin` runs the queries and acts on the verdicts.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeloom.api import podenv
from edgeloom.api.kinds.splittraining import KIND
from edgeloom_operators.prometheus import Sample

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
HEALTH = "WorkersHealthy"
"""The condition this loop owns: whether every running worker is healthy."""
UNHEALTHY_ANNOTATION = "edgeloom.io/unhealthy"
"""Set on a worker pod the operator found unhealthy: the reason and when."""
STALE, STRAGGLER = "MetricsStale", "Straggler"
MIN_PEERS = 3
SEEN_WINDOW = "1h"


@dataclass(frozen=True)
class WorkerPod:
    index: int
    name: str
    marked: bool
    """Already annotated as unhealthy."""
    age_s: float
    """Seconds since the pod started."""


@dataclass(frozen=True)
class Unhealthy:
    worker: WorkerPod
    reason: str
    detail: str


def worker_pods(pods: list[dict[str, Any]], now: datetime) -> list[WorkerPod]:
    """The running worker pods with their global indices (completion index + the group's
    ``EDGELOOM_INDEX_OFFSET``; a group of one runs a plain Job, index 0); pods being deleted or
    finished are left out."""
    out = []
    for pod in pods:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if meta.get("labels", {}).get("edgeloom.io/role") != "worker":
            continue
        if meta.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        if status.get("phase") != "Running":
            continue
        annotations = meta.get("annotations") or {}
        offset = 0
        for container in spec.get("containers") or []:
            for env in container.get("env") or []:
                if env.get("name") == podenv.INDEX_OFFSET:
                    offset = int(env.get("value") or 0)
        started = status.get("startTime") or meta.get("creationTimestamp")
        age = (now - datetime.fromisoformat(started)).total_seconds() if started else 0.0
        out.append(
            WorkerPod(
                int(annotations.get(COMPLETION_INDEX, 0)) + offset,  # a group of one: no index
                meta["name"],
                UNHEALTHY_ANNOTATION in annotations,
                age,
            )
        )
    return sorted(out, key=lambda w: w.index)


def _pods_matcher(namespace: str, pods: list[WorkerPod]) -> str:
    # pod names are DNS subdomains: only "." is special in a regex; in a PromQL string its
    # escaping backslash is itself escaped
    names = "|".join(w.name.replace(".", "\\\\.") for w in pods)
    return f'namespace="{namespace}",pod=~"{names}"'


def stale_query(namespace: str, pods: list[WorkerPod], window_s: float) -> str:
    """Pods scraped successfully in the last hour but never in the last ``window_s``."""
    sel = _pods_matcher(namespace, pods)
    return (
        f"max_over_time(up{{{sel}}}[{window_s:g}s]) == 0 "
        f"and on(namespace, pod) max_over_time(up{{{sel}}}[{SEEN_WINDOW}]) == 1"
    )


def round_time_query(namespace: str, name: str, window_s: float) -> str:
    """Each worker's compute + transfer time per round, averaged over ``window_s``, as the
    job's server measured it."""
    sel = f'namespace="{namespace}",kind="{KIND.kind}",name="{name}",role="server"'
    window = f"[{window_s:g}s]"
    return (
        f"max by (worker) (avg_over_time(edgeloom_worker_compute_seconds{{{sel}}}{window}) "
        f"+ avg_over_time(edgeloom_worker_transfer_seconds{{{sel}}}{window}))"
    )


def find_unhealthy(
    workers: list[WorkerPod],
    stale: list[Sample],
    round_times: list[Sample],
    window_s: float,
    factor: float,
) -> list[Unhealthy]:
    """The unhealthy workers among ``workers``, from the results of :func:`stale_query` and
    :func:`round_time_query`."""
    stale_pods = {s.labels.get("pod") for s in stale}
    times = {
        int(s.labels["worker"]): s.value
        for s in round_times
        if s.labels.get("worker", "").isdigit()
    }
    out = []
    for w in workers:
        if w.name in stale_pods:
            detail = f"Prometheus has not scraped pod {w.name} for {window_s:g} s"
            out.append(Unhealthy(w, STALE, detail))
            continue
        peers = [t for i, t in times.items() if i != w.index]
        if w.index not in times or len(peers) < MIN_PEERS - 1 or w.age_s < window_s:
            continue  # a replacement is judged on its own rounds only
        median = statistics.median(peers)
        if median > 0 and times[w.index] > factor * median:
            detail = (
                f"its round time {times[w.index]:.2f} s is {times[w.index] / median:.1f}x "
                f"its peers' median {median:.2f} s"
            )
            out.append(Unhealthy(w, STRAGGLER, detail))
    return out
