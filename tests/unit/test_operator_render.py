"""Operator renderers against golden files, and the placement rules they encode.

Regenerate the golden files after an intended change with
``EDGELOOM_UPDATE_GOLDEN=1 pytest tests/unit/test_operator_render.py`` and review the diff.
"""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.podenv import EXIT_INVALID, EXIT_JOB_FAILED
from edgeloom.api.resource import parse_resource
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.hatinferenceservice import HatInferenceServicePlugin
from edgeloom_operators.plugin import KindPlugin
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_operators.render import child_name, nats_secret
from edgeloom_operators.splittraining import SplitTrainingPlugin
from edgeloom_testkit.kinds.echoservice import EchoServicePlugin

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
CA = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
CONFIG = OperatorConfig(
    nats_url="tls://edgeloom-nats.edgeloom-system.svc:4222",
    nats_ca=CA,
    authority_secret="edgeloom-nats-authority",
    services_image="registry.example/edgeloom-services:0.1.0",
)


def body_of(example: str, uid: str = "0000-1111") -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "examples" / example).read_text())
    body["metadata"] |= {"namespace": "research", "uid": uid, "generation": 1}
    return body


splittraining, prunejob, echoservice = SplitTrainingPlugin(), PruneJobPlugin(), EchoServicePlugin()
hat = HatInferenceServicePlugin()
ECHO = {
    "apiVersion": "edgeloom.io/v1alpha1",
    "kind": "EchoService",
    "metadata": {"name": "echo"},
    "spec": {"replicas": 2},
}


def render(plugin: KindPlugin, body: dict[str, Any]) -> list[dict[str, Any]]:
    spec = parse_resource(body, plugin.info.spec_model, plugin.info.kind).spec
    return plugin.render(body, spec, CONFIG)


def echo_body(uid: str = "0000-1111") -> dict[str, Any]:
    body = copy.deepcopy(ECHO)
    body["metadata"] |= {"namespace": "research", "uid": uid, "generation": 1}
    return body


CASES = [
    (splittraining, "splittraining-mnist1d.yaml"),
    (prunejob, "prunejob-tiny-llama.yaml"),
    (hat, "hatinferenceservice-tiny-llama.yaml"),
    (echoservice, "echoservice"),
]


@pytest.mark.parametrize(("plugin", "example"), CASES, ids=[c[1] for c in CASES])
def test_children_match_the_golden_file(plugin: KindPlugin, example: str) -> None:
    body = echo_body() if example == "echoservice" else body_of(example)
    rendered = yaml.safe_dump_all(render(plugin, body), sort_keys=True)
    golden = GOLDEN / f"{example.removesuffix('.yaml')}.children.yaml"
    if os.environ.get("EDGELOOM_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"{golden.name} differs: see the module docstring"


def test_splittraining_places_the_server_in_the_cloud_and_worker_groups_on_edge_nodes() -> None:
    body = body_of("splittraining-mnist1d.yaml")
    body["spec"]["gpu"] = True
    body["spec"]["workers"][0]["deviceProfileLabel"] = "jetson-nano"
    kids = render(splittraining, body)
    jobs = {k["metadata"]["name"]: k for k in kids if k["kind"] == "Job"}
    assert sorted(jobs) == [
        "mnist1d-mergesfl-server",
        "mnist1d-mergesfl-worker-jetson-agx",
        "mnist1d-mergesfl-worker-jetson-nano",
        "mnist1d-mergesfl-worker-jetson-tx2",
    ]
    server = jobs["mnist1d-mergesfl-server"]["spec"]["template"]["spec"]
    assert server["nodeSelector"] == {"edgeloom.io/tier": "cloud"}
    assert server["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    nano = jobs["mnist1d-mergesfl-worker-jetson-nano"]
    assert nano["spec"]["template"]["spec"]["nodeSelector"] == {
        "edgeloom.io/tier": "edge",
        "edgeloom.io/device-profile": "jetson-nano",
    }
    # global worker indices: groups of 4, 3, 3 start at 0, 4, 7
    offsets = {
        name: next(
            e["value"]
            for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "EDGELOOM_INDEX_OFFSET"
        )
        for name, job in jobs.items()
        if "worker" in name
    }
    assert offsets == {
        "mnist1d-mergesfl-worker-jetson-nano": "0",
        "mnist1d-mergesfl-worker-jetson-tx2": "4",
        "mnist1d-mergesfl-worker-jetson-agx": "7",
    }
    assert nano["spec"]["completionMode"] == "Indexed"
    assert nano["spec"]["completions"] == nano["spec"]["parallelism"] == 4
    assert nano["metadata"]["annotations"]["edgeloom.io/essential"] == "false"


def test_hat_runs_the_cloud_in_the_cloud_and_each_device_group_behind_its_service() -> None:
    body = body_of("hatinferenceservice-tiny-llama.yaml")
    body["spec"]["cloud"] |= {"gpu": True, "replicas": 2, "maxReplicas": 3}
    body["spec"]["devices"] = [
        {"name": "phones", "count": 3, "port": 8000, "deviceProfileLabel": "pixel"},
        {"name": "laptops", "count": 2, "port": 9000},
    ]
    kids = render(hat, body)
    deployments = {k["metadata"]["name"]: k for k in kids if k["kind"] == "Deployment"}
    services = {k["metadata"]["name"]: k for k in kids if k["kind"] == "Service"}
    names = [
        "tiny-llama-hat-cloud",
        "tiny-llama-hat-device-laptops",
        "tiny-llama-hat-device-phones",
    ]
    assert sorted(deployments) == sorted(services) == names
    cloud = deployments["tiny-llama-hat-cloud"]
    assert cloud["spec"]["replicas"] == 2
    pod = cloud["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgeloom.io/tier": "cloud"}
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    phones = deployments["tiny-llama-hat-device-phones"]
    container = phones["spec"]["template"]["spec"]["containers"][0]
    assert phones["spec"]["replicas"] == 3
    assert phones["spec"]["template"]["spec"]["nodeSelector"] == {
        "edgeloom.io/tier": "edge",
        "edgeloom.io/device-profile": "pixel",
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    indices = {
        name: next(
            e["value"]
            for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "EDGELOOM_INDEX"
        )
        for name, d in deployments.items()
        if "device" in name
    }  # global device indices: the groups of 3 and 2 start at 0 and 3
    assert indices == {"tiny-llama-hat-device-phones": "0", "tiny-llama-hat-device-laptops": "3"}
    laptops = services["tiny-llama-hat-device-laptops"]["spec"]
    assert {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"} in laptops[
        "ports"
    ]
    selector = laptops["selector"]
    assert selector["edgeloom.io/group"] == "laptops"  # not the phones' pods
    assert (
        selector == deployments["tiny-llama-hat-device-laptops"]["spec"]["selector"]["matchLabels"]
    )
    template_labels = deployments["tiny-llama-hat-device-laptops"]["spec"]["template"]["metadata"]
    assert selector.items() <= template_labels["labels"].items()


def test_hat_reports_its_cloud_replicas_and_the_device_groups_endpoints() -> None:
    body = body_of("hatinferenceservice-tiny-llama.yaml")
    body["spec"]["cloud"] |= {"replicas": 2, "maxReplicas": 2}
    body["spec"]["devices"].append({"name": "phones", "count": 2, "port": 9000})
    deployments = [k for k in render(hat, body) if k["kind"] == "Deployment"]
    for d in deployments:  # as the API server reports them once rolled out
        n = d["spec"]["replicas"]
        d["metadata"]["generation"] = 1
        d["status"] = {
            "observedGeneration": 1,
            "replicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
            "updatedReplicas": n,
            "conditions": [{"type": "Progressing", "reason": "NewReplicaSetAvailable"}],
        }
    outcome = hat.outcome({"Deployment": deployments})
    assert outcome.available and outcome.fields["availableReplicas"] == 5
    assert outcome.fields["cloudReplicas"] == 2
    assert outcome.fields["endpoints"] == [
        "http://tiny-llama-hat-device-laptop.research.svc:8000/v1",
        "http://tiny-llama-hat-device-phones.research.svc:9000/v1",
    ]
    assert hat.info.status_model.model_validate(outcome.fields).cloud_replicas == 2
    (cloud,) = [d for d in deployments if d["metadata"]["name"].endswith("-cloud")]
    selected = dict(kv.split("=") for kv in outcome.fields["cloudSelector"].split(","))
    assert selected == cloud["spec"]["selector"]["matchLabels"]  # what the scale reports


LOCKED_DOWN = [
    (splittraining, body_of("splittraining-mnist1d.yaml", uid="abc"), "Job"),
    (echoservice, echo_body(uid="abc"), "Deployment"),
]


@pytest.mark.parametrize(("plugin", "body", "workload"), LOCKED_DOWN, ids=["job", "service"])
def test_every_child_is_owned_labelled_and_locked_down(
    plugin: KindPlugin, body: dict[str, Any], workload: str
) -> None:
    kids = render(plugin, body)
    name = body["metadata"]["name"]
    assert workload in {k["kind"] for k in kids}
    for kid in kids:
        meta = kid["metadata"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "edgeloom.io/v1alpha1",
                "kind": plugin.info.kind,
                "name": name,
                "uid": "abc",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["edgeloom.io/job"] == name
        assert meta["namespace"] == "research"
        if kid["kind"] != workload:
            continue
        pod = kid["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["nodeSelector"]["edgeloom.io/tier"] in ("cloud", "edge")
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "resource", "mountPath": "/etc/edgeloom", "readOnly": True} in container[
            "volumeMounts"
        ]
        refs = [e["valueFrom"] for e in container["env"] if "valueFrom" in e]
        secrets = {r["secretKeyRef"]["name"] for r in refs if "secretKeyRef" in r}
        assert secrets == {f"{name}-nats"}
        # the pod mounts its own role's credentials and the CA, nothing else of the Secret
        role = container["name"]
        nats = next(v for v in pod["volumes"] if v["name"] == "nats")["secret"]
        assert nats["secretName"] == f"{name}-nats"
        assert [i["key"] for i in nats["items"]] == [f"{role}.creds", "ca.crt"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["EDGELOOM_NATS_CREDS"] == f"/var/run/edgeloom/nats/{role}.creds"
        assert env["EDGELOOM_NATS_CA_FILE"] == "/var/run/edgeloom/nats/ca.crt"
        fields = {r["fieldRef"]["fieldPath"] for r in refs if "fieldRef" in r}
        assert fields == {"status.podIP"}  # /metrics listens on the pod IP
        annotations = kid["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])


@pytest.mark.parametrize(("plugin", "example"), CASES[:2], ids=[c[1] for c in CASES[:2]])
def test_every_role_job_fails_at_once_on_a_deterministic_exit_and_retries_crashes(
    plugin: KindPlugin, example: str
) -> None:
    jobs = [k for k in render(plugin, body_of(example)) if k["kind"] == "Job"]
    assert jobs
    for job in jobs:
        spec = job["spec"]
        (container,) = spec["template"]["spec"]["containers"]
        assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
        fail, ignore = spec["podFailurePolicy"]["rules"]
        assert fail == {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": container["name"],
                "operator": "In",
                "values": [EXIT_INVALID, EXIT_JOB_FAILED],
            },
        }
        # a drained or lost node is not the role's failure; exit 1 or an OOM kill (137) falls
        # through to backoffLimit, which still retries it
        assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        assert spec["backoffLimit"] >= 2


def test_a_service_runs_a_deployment_behind_a_service_selecting_its_pods() -> None:
    kids = {k["kind"]: k for k in render(echoservice, echo_body())}
    assert sorted(kids) == ["ConfigMap", "Deployment", "Service"]
    deployment, service = kids["Deployment"], kids["Service"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["minReadySeconds"] > 0
    template = deployment["spec"]["template"]
    assert template["spec"]["restartPolicy"] == "Always"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 9400}
    command = template["spec"]["containers"][0]["command"]
    assert command == ["python", "-m", "edgeloom_testkit.kinds.echoservice"]


def test_the_secret_carries_the_url_the_ca_and_the_minted_credentials() -> None:
    body = body_of("prunejob-tiny-llama.yaml")
    secret = nats_secret(body, prunejob.info, CONFIG, {"pruner.creds": "minted"})
    assert secret["metadata"]["name"] == "tiny-llama-comp-20-nats"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"url": CONFIG.nats_url, "ca.crt": CA, "pruner.creds": "minted"}


def test_the_config_map_carries_the_resource_without_status() -> None:
    body = body_of("prunejob-tiny-llama.yaml")
    body["status"] = {"phase": "Running"}
    config_map = next(k for k in render(prunejob, body) if k["kind"] == "ConfigMap")
    resource = yaml.safe_load(config_map["data"]["resource.yaml"])
    assert resource["metadata"]["uid"] == "0000-1111"
    assert resource["spec"] == body["spec"]
    assert "status" not in resource


def test_child_names_fit_a_label_value_and_stay_distinct() -> None:
    long = "a" * 60
    first, second = child_name(long, "worker", "group-one"), child_name(long, "worker", "group-two")
    assert len(first) <= 63 and len(second) <= 63
    assert first != second
    assert child_name("short", "server") == "short-server"


def test_the_config_never_shows_the_password() -> None:
    in_url = OperatorConfig(nats_url="nats://edgeloom:s3cret@nats:4222")
    assert "s3cret" not in repr(in_url) and "nats:4222" in repr(in_url)
