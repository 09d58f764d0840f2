"""The operator's worker-health queries against a real Prometheus scraping real endpoints.

Four "worker pods" and one "server pod" are metric endpoints of this process, declared with the
apps' own metric classes and scraped by Prometheus with the ``namespace``/``pod`` target labels
a cluster scrape config gives. One worker endpoint stops answering (stale metrics); the server
reports one worker 5x slower than the others (a straggler).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgeloom.apps.mergesfl.metrics import ServerMetrics, WorkerMetrics
from edgeloom.runtime.metrics import MetricFactory
from edgeloom_operators.prometheus import Prometheus as Client
from edgeloom_operators.prometheus import PrometheusError
from edgeloom_operators.splittraining.health import (
    STALE,
    STRAGGLER,
    WorkerPod,
    find_unhealthy,
    round_time_query,
    stale_query,
)
from edgeloom_testkit.controlplane import free_port, wait_for
from edgeloom_testkit.prometheus import Prometheus

pytestmark = pytest.mark.integration
NS, NAME, WINDOW = "research", "job", 4.0
LABELS = {"kind": "SplitTrainingJob", "name": NAME}


def test_stale_workers_and_stragglers_are_found_on_real_prometheus_data(tmp_path: Path) -> None:
    endpoints, targets = [], []
    for i in range(4):
        worker = MetricFactory(const_labels={**LABELS, "role": "worker"})
        WorkerMetrics(worker).batch_size.set(16)
        targets.append((f"{NAME}-worker-{i}", worker.serve(free_port(), "127.0.0.1")))
        endpoints.append(worker)
    server = MetricFactory(const_labels={**LABELS, "role": "server"})
    metrics = ServerMetrics(server)
    for i in range(4):  # worker 3 is five times slower than its peers
        metrics.worker(i, 16, 1.0 if i < 3 else 5.0, 0.2 if i < 3 else 1.0)
    targets.append((f"{NAME}-server-0", server.serve(free_port(), "127.0.0.1")))
    scrape = [
        {
            "job_name": pod,
            "scrape_interval": "500ms",
            "scrape_timeout": "400ms",
            "static_configs": [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NS, "pod": pod}}
            ],
        }
        for pod, port in targets
    ]
    workers = [WorkerPod(i, f"{NAME}-worker-{i}", False, 600.0) for i in range(4)]
    with Prometheus(tmp_path / "prometheus", scrape) as prometheus:
        client = Client(prometheus.url)
        wait_for(
            lambda: len(client.query(f'up{{namespace="{NS}"}} == 1')) == 5, 30, "five targets up"
        )
        time.sleep(WINDOW)  # a full window of healthy samples
        assert client.query(stale_query(NS, workers, WINDOW)) == []
        times = client.query(round_time_query(NS, NAME, WINDOW))
        assert {s.labels["worker"]: round(s.value, 3) for s in times} == {
            "0": 1.2,
            "1": 1.2,
            "2": 1.2,
            "3": 6.0,
        }
        (straggler,) = find_unhealthy(workers, [], times, WINDOW, 3.0)
        assert (straggler.worker.index, straggler.reason) == (3, STRAGGLER)
        assert find_unhealthy(workers, [], times, WINDOW, 6.0) == []  # within the factor

        endpoints[1].close()  # worker 1 hangs: scrapes fail from now on

        def stale() -> list:
            return client.query(stale_query(NS, workers, WINDOW))

        (sample,) = wait_for(stale, 30, "worker 1 stale", 0.5)
        assert sample.labels["pod"] == f"{NAME}-worker-1"
        verdicts = find_unhealthy(workers, [sample], times, WINDOW, 3.0)
        assert [(v.worker.index, v.reason) for v in verdicts] == [(1, STALE), (3, STRAGGLER)]

        with pytest.raises(PrometheusError, match="parse error"):
            client.query("up{")
    with pytest.raises(PrometheusError, match="unavailable"):
        client.query("up")
