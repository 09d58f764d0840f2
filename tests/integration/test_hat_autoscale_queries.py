"""The cloud autoscaler's queries against a real Prometheus scraping endpoints declared with
the HAT roles' own metric classes: the queue per replica and the devices' p95 TTFT, and the
replicas HPA's rule recommends from them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgeloom.api.kinds.hatinferenceservice import Autoscaling
from edgeloom.apps.hat.metrics import CloudMetrics, DeviceMetrics
from edgeloom.runtime.metrics import MetricFactory
from edgeloom_operators.hatinferenceservice.autoscale import load_query, load_value, recommend
from edgeloom_operators.prometheus import Prometheus as Client
from edgeloom_testkit.controlplane import free_port, wait_for
from edgeloom_testkit.prometheus import Prometheus

pytestmark = pytest.mark.integration
NS, NAME, WINDOW = "research", "svc", 5.0
LABELS = {"kind": "HatInferenceService", "name": NAME}


def test_the_load_the_autoscaler_reads_is_the_roles_own(tmp_path: Path) -> None:
    targets = []
    for i, queue in enumerate((3, 5)):
        cloud = MetricFactory(const_labels={**LABELS, "role": "cloud"})
        CloudMetrics(cloud).queue.set(queue)
        targets.append((f"{NAME}-cloud-{i}", cloud.serve(free_port(), "127.0.0.1")))
    device = MetricFactory(const_labels={**LABELS, "role": "device"})
    ttft = DeviceMetrics(device).ttft
    for seconds in [0.02] * 90 + [3.0] * 10:  # a tenth of the requests wait 3 s
        ttft.observe(seconds)
    targets.append((f"{NAME}-device-0", device.serve(free_port(), "127.0.0.1")))
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
    queue_scaling = Autoscaling(enabled=True, target=2.0, window_seconds=WINDOW)
    ttft_scaling = Autoscaling(enabled=True, metric="ttft-p95", target=1.0, window_seconds=WINDOW)
    with Prometheus(tmp_path / "prometheus", scrape) as prometheus:
        client = Client(prometheus.url)
        wait_for(lambda: len(client.query(f'up{{namespace="{NS}"}} == 1')) == 3, 30, "targets up")
        time.sleep(1.5)  # a few scrapes of each
        queue = load_value(client.query(load_query(NS, NAME, queue_scaling)))
        assert queue == pytest.approx(4.0)  # (3 + 5) / 2 per replica
        assert recommend(2, queue, queue_scaling, 1, 8) == 4
        for seconds in [0.02] * 90 + [3.0] * 10:  # the rate needs the counts to move
            ttft.observe(seconds)
        p95 = wait_for(
            lambda: load_value(client.query(load_query(NS, NAME, ttft_scaling))),
            20,
            "a p95 TTFT",
            0.5,
        )
        assert 2.5 <= p95 <= 5.0  # within the 2.5-5 s bucket, where the slowest tenth lies
        assert recommend(1, p95, ttft_scaling, 1, 3) == 3
        assert load_value(client.query(load_query(NS, "other", queue_scaling))) is None
