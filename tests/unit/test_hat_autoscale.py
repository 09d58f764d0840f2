"""The cloud autoscaler's decisions: HPA's recommendation within tolerance and bounds, scaling
down only after the stabilization window, and the render keeping what the loop chose."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from edgeloom.api.kinds.hatinferenceservice import Autoscaling, HatInferenceServiceSpec
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.hatinferenceservice import HatInferenceServicePlugin
from edgeloom_operators.hatinferenceservice.autoscale import (
    SCALING,
    Stabilizer,
    load_query,
    load_value,
    recommend,
)
from edgeloom_operators.hatinferenceservice.render import cloud_replicas
from edgeloom_operators.prometheus import Sample

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hatinferenceservice-tiny-llama.yaml"
QUEUE = Autoscaling(enabled=True, target=2.0, tolerance=0.1)


@pytest.mark.parametrize(
    ("current", "value", "expected"),
    [
        (2, 2.1, 2),  # within 10 % of the target: no change
        (2, 4.0, 4),  # twice the target: twice the replicas
        (3, 2.5, 4),  # ceil(3 x 1.25)
        (4, 1.0, 2),  # half the load
        (2, 40.0, 6),  # capped at maxReplicas
        (3, 0.0, 1),  # no queue at all: floored at minReplicas
    ],
)
def test_the_recommendation_is_hpas(current: int, value: float, expected: int) -> None:
    assert recommend(current, value, QUEUE, 1, 6) == expected


def test_scaling_down_waits_for_the_stabilization_window() -> None:
    stable = Stabilizer()
    assert stable.decide(0.0, 2, 4, window_s=60) == 4  # up at once
    assert stable.decide(10.0, 4, 2, window_s=60) == 4  # down: 4 was recommended 10 s ago
    assert stable.decide(50.0, 4, 3, window_s=60) == 4
    assert stable.decide(65.0, 4, 2, window_s=60) == 3  # the 4 left the window, the 3 not
    assert stable.decide(120.0, 4, 2, window_s=60) == 2


def test_the_render_keeps_the_loops_replicas_within_the_bounds() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["cloud"] = {"replicas": 1, "minReplicas": 1, "maxReplicas": 3}
    off = HatInferenceServiceSpec.model_validate(doc["spec"])
    doc["spec"]["autoscaling"] = {"enabled": True}
    on = HatInferenceServiceSpec.model_validate(doc["spec"])
    assert cloud_replicas({"status": {"cloudReplicas": 2}}, off) == 1  # not autoscaled
    assert cloud_replicas({"status": {"cloudReplicas": 2}}, on) == 2
    assert cloud_replicas({"status": {"cloudReplicas": 9}}, on) == 3
    assert cloud_replicas({}, on) == 1


def test_queries_select_the_services_own_role_and_no_data_is_none() -> None:
    queue = load_query("ml", "svc", QUEUE)
    assert 'kind="HatInferenceService",name="svc",role="cloud"' in queue and "[60s]" in queue
    ttft = load_query("ml", "svc", Autoscaling(metric="ttft-p95"))
    assert ttft.startswith("histogram_quantile(0.95,") and 'role="device"' in ttft
    assert load_value([]) is None
    assert load_value([Sample({}, math.nan)]) is None
    assert load_value([Sample({}, 1.5)]) == 1.5


class FakeKube:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def apply(self, child: dict[str, Any]) -> None:
        self.applied.append(child)

    def event(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


@dataclass
class FakeOperator:
    """What the loop uses of the operator: the cluster, Prometheus, verdicts."""

    values: list[float]
    kube: FakeKube = field(default_factory=FakeKube)
    config: OperatorConfig = field(default_factory=lambda: OperatorConfig(nats_url="nats://x"))
    verdicts: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def prometheus(self) -> Any:
        return SimpleNamespace(query=lambda expr: [Sample({}, self.values.pop(0))])

    def set_verdict(self, key: Any, type: str, verdict: tuple[str, str, str]) -> None:
        self.verdicts[type] = verdict


async def test_the_loop_scales_the_cloud_deployment_and_says_why() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["cloud"] = {"replicas": 1, "minReplicas": 1, "maxReplicas": 4}
    doc["spec"]["autoscaling"] = {"enabled": True, "target": 2.0}
    doc["metadata"] |= {"namespace": "ml", "uid": "u-1", "generation": 1}
    doc["status"] = {"phase": "Running", "cloudReplicas": 1}
    plugin = HatInferenceServicePlugin()
    operator: Any = FakeOperator([6.0, 2.0])
    await plugin.scale_cloud(operator, plugin, doc)
    (deployment,) = operator.kube.applied
    assert deployment["metadata"]["name"] == "tiny-llama-hat-cloud"
    assert deployment["spec"]["replicas"] == 3  # ceil(1 x 6 / 2)
    assert operator.kube.events == [
        ("CloudScaled", "cloud replicas 1 -> 3: queue-length 6 against a target of 2")
    ]
    assert operator.verdicts[SCALING][:2] == ("True", "Scaled")
    doc["status"]["cloudReplicas"] = 3  # what the refreshed status says now
    await plugin.scale_cloud(operator, plugin, doc)  # on target: nothing applied
    assert len(operator.kube.applied) == 1
    assert operator.verdicts[SCALING][:2] == ("True", "Steady")
