"""A HatInferenceService on the real control plane, installed by the chart with a real
Prometheus: it becomes Available, the ``openai`` client gets a streamed greedy completion from
the device pod, a killed cloud pod is replaced (a request in its place fails with a clear
error, new ones succeed), ``kubectl scale`` sets the cloud replicas within their bounds, load
raises them through the operator's autoscaling loop and they fall back after, and deleting the
resource removes every child."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from edgeloom.models.llm import load_model
from edgeloom_testkit.controlplane import ControlPlane, free_port, wait_for
from edgeloom_testkit.node_agent import NodeAgent
from edgeloom_testkit.prometheus import cluster_prometheus
from edgeloom_testkit.secure_nats import secure_nats
from edgeloom_testkit.tiny_llms import greedy_tokens

ROOT = Path(__file__).resolve().parents[2]
NAME = "tiny-llama-hat"
PROMPT = "def read_file(path):\n    "

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane, node_agent: NodeAgent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    system = "edgeloom-hat"
    with (
        secure_nats(tmp_path_factory.mktemp("nats")) as nats,
        cluster_prometheus(control_plane, tmp_path_factory.mktemp("prometheus")) as prometheus,
    ):
        control_plane.install_edgeloom(
            "hat",
            system,
            nats,
            f"prometheus.url={prometheus.url}",
            "prometheus.checkIntervalSeconds=2",
        )
        yield system
        control_plane.helm("uninstall", "hat", "-n", system, "--wait", check=False, timeout=300)
        control_plane.kubectl("delete", "namespace", system, "--wait=false", check=False)


def running_pods(plane: ControlPlane, namespace: str, role: str) -> list[dict[str, Any]]:
    items = plane.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"edgeloom.io/job={NAME},edgeloom.io/role={role}"
    )["items"]
    return [
        p
        for p in items
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def available(plane: ControlPlane, namespace: str) -> dict[str, Any] | None:
    status = plane.kubectl_json("get", "his", NAME, "-n", namespace).get("status") or {}
    ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
    return status if status.get("phase") == "Running" and ready == "True" else None


def streamed(url: str, new_tokens: int) -> str:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    stream = client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=new_tokens, temperature=0, stream=True
    )
    return "".join(chunk.choices[0].text for chunk in stream if chunk.choices)


def test_a_hat_service_serves_survives_a_lost_cloud_pod_and_goes_away(
    control_plane: ControlPlane, installed: str, namespace: str, tiny_llama_quick: Path
) -> None:
    plane = control_plane
    doc = yaml.safe_load((ROOT / "examples" / "hatinferenceservice-tiny-llama.yaml").read_text())
    doc["spec"]["model"] = {"path": str(tiny_llama_quick)}
    doc["spec"]["adapter"]["training"]["steps"] = 10
    port = free_port()
    doc["spec"]["devices"][0]["port"] = port
    doc["spec"]["cloud"] |= {"minReplicas": 1, "maxReplicas": 2}
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    plane.kubectl(
        "wait", f"his/{NAME}", "-n", namespace, "--for=condition=Ready", "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    status = wait_for(lambda: available(plane, namespace), 30, "the service Available")
    assert status["availableReplicas"] == 2  # one cloud, one device pod
    (device,) = running_pods(plane, namespace, "device")
    url = f"http://{device['status']['podIP']}:{port}/v1"

    model, tokenizer = load_model(tiny_llama_quick)
    prompt = tokenizer(PROMPT)["input_ids"]
    expected = tokenizer.decode(greedy_tokens(model, prompt, 12), skip_special_tokens=True)
    # the node agent ignores readiness probes: the endpoint answers once the adapter is ready
    assert wait_for(lambda: _answer(url), 300, "the device's endpoint", 1.0) == expected

    (cloud,) = running_pods(plane, namespace, "cloud")
    plane.kubectl("delete", "pod", cloud["metadata"]["name"], "-n", namespace, "--wait=true")
    replaced = wait_for(
        lambda: [
            p
            for p in running_pods(plane, namespace, "cloud")
            if p["metadata"]["name"] != cloud["metadata"]["name"]
        ],
        120,
        "a new cloud pod",
    )
    assert len(replaced) == 1
    # until the new replica serves, a request fails with OpenAI's error shape, then succeeds
    assert wait_for(lambda: _answer(url), 180, "an answer from the new cloud pod", 1.0) == expected
    wait_for(lambda: available(plane, namespace), 120, "the service Available again")

    scale_by_hand(plane, namespace)
    scale_under_load(plane, namespace, url)

    plane.kubectl("delete", "his", NAME, "-n", namespace, "--wait=true", "--timeout=120s")

    def children_left() -> list[str]:
        kinds = "deployments,services,configmaps,secrets,pods"
        items = plane.kubectl_json("get", kinds, "-n", namespace, "-l", f"edgeloom.io/job={NAME}")
        return [f"{i['kind']}/{i['metadata']['name']}" for i in items["items"]]

    wait_for(lambda: children_left() == [], 120, "every child deleted")


def cloud_replicas(plane: ControlPlane, namespace: str) -> tuple[int, int, int]:
    """The cloud Deployment's replicas, the status' count and the running cloud pods."""
    deployment = plane.kubectl_json("get", "deployment", f"{NAME}-cloud", "-n", namespace)
    status = plane.kubectl_json("get", "his", NAME, "-n", namespace).get("status") or {}
    running = len(running_pods(plane, namespace, "cloud"))
    return deployment["spec"]["replicas"], status.get("cloudReplicas", 0), running


def scale_by_hand(plane: ControlPlane, namespace: str) -> None:
    """The scale subresource: ``kubectl scale`` moves the cloud replicas, within bounds."""
    refused = plane.kubectl(
        "scale", f"his/{NAME}", "-n", namespace, "--replicas=9", check=False
    )  # fmt: skip
    assert refused.returncode != 0 and "cloud.replicas must lie between" in refused.stderr
    for replicas in (2, 1):
        plane.kubectl("scale", f"his/{NAME}", "-n", namespace, f"--replicas={replicas}")
        wait_for(
            lambda n=replicas: cloud_replicas(plane, namespace) == (n, n, n),
            120,
            f"{replicas} cloud replicas",
        )
    raw = f"/apis/edgeloom.io/v1alpha1/namespaces/{namespace}/hatinferenceservices/{NAME}/scale"
    scale = json.loads(plane.kubectl("get", "--raw", raw).stdout)
    assert scale["status"]["replicas"] == 1
    assert "edgeloom.io/role=cloud" in scale["status"]["selector"]


def scale_under_load(plane: ControlPlane, namespace: str, url: str) -> None:
    """The operator's loop on Prometheus' queue length: streams from many clients at once
    raise the cloud replicas to ``maxReplicas``; once they stop, the replicas fall back."""
    autoscaling = {
        "enabled": True,
        "metric": "queue-length",
        "target": 0.3,
        "windowSeconds": 6,
        "scaleDownStabilizationSeconds": 6,
    }
    patch = {"spec": {"autoscaling": autoscaling}}
    plane.kubectl(
        "patch", "his", NAME, "-n", namespace, "--type=merge", "-p", yaml.safe_dump(patch)
    )
    loaded = threading.Event()

    def client() -> None:
        while not loaded.is_set():
            _answer(url)

    with ThreadPoolExecutor(6) as pool:
        for _ in range(6):
            pool.submit(client)
        try:
            wait_for(lambda: cloud_replicas(plane, namespace)[1] == 2, 180, "scaled up under load")
        finally:
            loaded.set()
    wait_for(lambda: cloud_replicas(plane, namespace) == (1, 1, 1), 180, "scaled back down")
    events = plane.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "reason=CloudScaled"
    )["items"]
    assert {"cloud replicas 1 -> 2", "cloud replicas 2 -> 1"} <= {
        e["message"].split(":")[0] for e in events
    }


def _answer(url: str) -> str | None:
    """The streamed answer, or None while the service cannot give one (the error is
    OpenAI's: a connection refused before the endpoint listens, a 502 while the cloud is
    replaced)."""
    try:
        return streamed(url, 12)
    except openai.APIError:  # connection refused, an HTTP error, an error event in the stream
        return None
