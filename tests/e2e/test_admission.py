"""What the real kube-apiserver admits, with only the generated CRDs applied (no operator).

The CRDs say what a kind's registration says (:mod:`edgeloom.api.crdgen`): a job's spec is
immutable once created and a service's rolls out; a name the operator could not use is
refused at admission, naming the rule; ``kubectl explain`` gives each field's default and
range; ``kubectl get`` shows Phase, Ready, Reason, ``<round>/<total>`` and the headline metric
under its own name, rounded. And the example's worker groups, as the operator renders them,
are placed by the real scheduler on the fake nodes of their own device profile.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.api.crdgen import crd_name, render_crd_yaml
from edgeloom.api.kinds.splittraining import SplitTrainingJobStatus
from edgeloom.api.registry import KindInfo, kinds
from edgeloom.api.resource import parse_resource
from edgeloom.api.status import Phase, Progress, set_summary_conditions
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.splittraining import SplitTrainingPlugin
from edgeloom_testkit.controlplane import DEFAULT_NODES, PROFILE_LABEL, ControlPlane, wait_for
from edgeloom_testkit.kinds.echoservice import KIND as ECHO

ROOT = Path(__file__).resolve().parents[2]
SPLIT = ROOT / "examples" / "splittraining-mnist1d.yaml"
PRUNE = ROOT / "examples" / "prunejob-minilm.yaml"

pytestmark = pytest.mark.timeout(300)


ECHO_RESOURCE: dict[str, Any] = {
    "apiVersion": "edgeloom.io/v1alpha1",
    "kind": "EchoService",
    "metadata": {"name": "echo"},
}


def apply_crds(plane: ControlPlane, infos: list[KindInfo]) -> None:
    text = "---\n".join(render_crd_yaml(info) for info in infos)
    plane.kubectl("apply", "--server-side", "-f", "-", input=text)
    for info in infos:
        plane.kubectl("wait", f"crd/{crd_name(info)}", "--for=condition=Established")


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> Iterator[None]:
    """The shipped kinds' CRDs as crdgen writes them (left in place: the chart's are the same)
    and the test-only EchoService's (removed after)."""
    apply_crds(control_plane, [*kinds().values(), ECHO])
    yield
    control_plane.kubectl("delete", "crd", crd_name(ECHO), "--wait=false", check=False)


def example(path: Path, name: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    if name is not None:
        obj["metadata"]["name"] = name
    return obj


def create(plane: ControlPlane, namespace: str, obj: dict[str, Any], check: bool = True) -> Any:
    return plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj), check=check
    )


def merge_patch(
    plane: ControlPlane, namespace: str, what: str, patch: dict[str, Any], *extra: str
) -> Any:
    args = ("patch", what, "-n", namespace, "--type=merge", "-p", json.dumps(patch), *extra)
    return plane.kubectl(*args, check=False)


def test_a_jobs_spec_is_immutable_and_a_services_rolls_out(
    control_plane: ControlPlane, crds: None, namespace: str
) -> None:
    plane = control_plane
    job = example(SPLIT)
    name, rounds = job["metadata"]["name"], job["spec"]["training"]["rounds"]
    create(plane, namespace, job)

    refused = merge_patch(
        plane,
        namespace,
        f"splittrainingjob/{name}",
        {"spec": {"training": {"rounds": rounds + 1}}},
    )
    assert refused.returncode != 0
    assert (
        "spec is immutable: delete and re-create the SplitTrainingJob to run a new spec"
        in refused.stderr
    ), refused.stderr
    stored = plane.kubectl_json("get", "splittrainingjob", name, "-n", namespace)
    assert stored["spec"]["training"]["rounds"] == rounds
    assert stored["metadata"]["generation"] == 1
    # what the operator and users still change: metadata, and status through its subresource
    labelled = merge_patch(
        plane, namespace, f"splittrainingjob/{name}", {"metadata": {"labels": {"team": "a"}}}
    )
    assert labelled.returncode == 0, labelled.stderr
    status = merge_patch(
        plane,
        namespace,
        f"splittrainingjob/{name}",
        {"status": {"phase": "Running"}},
        "--subresource=status",
    )
    assert status.returncode == 0, status.stderr

    # a service kind's spec is not frozen: kubectl scale (and any spec edit) rolls it out
    create(plane, namespace, {**ECHO_RESOURCE, "spec": {"replicas": 1}})
    scaled = plane.kubectl("scale", "echoservice/echo", "-n", namespace, "--replicas=2")
    assert scaled.returncode == 0
    edited = merge_patch(plane, namespace, "echoservice/echo", {"spec": {"replicas": 3}})
    assert edited.returncode == 0, edited.stderr
    echo = plane.kubectl_json("get", "echoservice", "echo", "-n", namespace)
    assert (echo["spec"]["replicas"], echo["metadata"]["generation"]) == (3, 3)


NAMES = [
    ("a" * 70, "metadata.name must be at most 63 characters"),
    ("mnist1d.v2", "metadata.name must consist of lowercase letters, digits and '-'"),
]


@pytest.mark.parametrize("path", [SPLIT, PRUNE], ids=lambda p: p.stem)
@pytest.mark.parametrize(("name", "rule"), NAMES, ids=["70-chars", "dotted"])
def test_a_name_the_operator_cannot_use_is_refused_at_admission(
    control_plane: ControlPlane, crds: None, namespace: str, path: Path, name: str, rule: str
) -> None:
    obj = example(path, name)
    refused = create(control_plane, namespace, obj, check=False)
    assert refused.returncode != 0
    assert rule in refused.stderr, refused.stderr
    plural = obj["kind"].lower() + "s"
    assert control_plane.kubectl_json("get", plural, "-n", namespace)["items"] == []
    # the longest name that fits is admitted
    admitted = create(control_plane, namespace, example(path, "a" * 63), check=False)
    assert admitted.returncode == 0, admitted.stderr


def test_a_service_name_must_start_with_a_letter(
    control_plane: ControlPlane, crds: None, namespace: str
) -> None:
    obj = {**ECHO_RESOURCE, "metadata": {"name": "1echo"}, "spec": {}}
    refused = create(control_plane, namespace, obj, check=False)
    assert refused.returncode != 0
    assert "metadata.name must consist of lowercase letters" in refused.stderr, refused.stderr
    assert "start with a lowercase letter and" in refused.stderr


def test_kubectl_explain_gives_defaults_and_ranges(control_plane: ControlPlane, crds: None) -> None:
    rounds = control_plane.kubectl("explain", "splittrainingjob.spec.training.rounds").stdout
    assert "Maximum number of rounds. Default: 50. Range: 1 to 100000." in " ".join(rounds.split())
    rate = control_plane.kubectl("explain", "splittrainingjob.spec.training.learningRate").stdout
    assert "Default: 0.05. Range: greater than 0, at most 10." in " ".join(rate.split())
    spec = control_plane.kubectl("explain", "prunejob.spec").stdout
    assert "Immutable once created" in " ".join(spec.split())


def test_kubectl_get_shows_ready_reason_progress_and_the_named_rounded_metric(
    control_plane: ControlPlane, crds: None, namespace: str
) -> None:
    plane = control_plane
    name = example(SPLIT)["metadata"]["name"]
    create(plane, namespace, example(SPLIT))
    status = SplitTrainingJobStatus(
        observed_generation=1,
        phase=Phase.RUNNING,
        progress=Progress(round=5, total_rounds=30, metric_value=0.9204514026641846),
    )
    status.conditions = set_summary_conditions(
        [], Phase.RUNNING, False, "RoundCompleted", "round 5: accuracy 0.9205", 1
    )
    patched = merge_patch(
        plane,
        namespace,
        f"splittrainingjob/{name}",
        {"status": status.to_wire()},
        "--subresource=status",
    )
    assert patched.returncode == 0, patched.stderr

    table = plane.kubectl("get", "splittrainingjob", name, "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header == ["NAME", "PHASE", "READY", "REASON", "PROGRESS", "ACCURACY", "AGE"]
    assert row[:6] == [name, "Running", "False", "RoundCompleted", "5/30", "0.9205"]

    plane.kubectl("create", "-n", namespace, "-f", str(PRUNE))
    wide = plane.kubectl("get", "prunejob", "-n", namespace, "-o", "wide").stdout.splitlines()
    columns = "NAME PHASE READY REASON METHOD RATIO STAGE PROGRESS QUALITY AGE"
    assert wide[0].split() == columns.split()


def test_the_examples_worker_groups_are_placed_on_nodes_of_their_device_profile(
    control_plane: ControlPlane, crds: None, namespace: str
) -> None:
    """One pod of each worker group's rendered Job, created bare (no operator, no kubelet):
    the scheduler binds the jetson-agx worker to the jetson-agx node, and so on."""
    plane = control_plane
    name = example(SPLIT)["metadata"]["name"]
    create(plane, namespace, example(SPLIT))
    body = plane.kubectl_json("get", "splittrainingjob", name, "-n", namespace)
    plugin = SplitTrainingPlugin()
    spec = parse_resource(body, plugin.info.spec_model, plugin.info.kind).spec
    config = OperatorConfig(
        nats_url="tls://nats:4222", nats_ca="", authority_secret="nats-authority"
    )
    groups = {g.name: g.device_profile_label for g in spec.workers}
    assert set(groups.values()) == {"jetson-nano", "jetson-tx2", "jetson-agx"}
    pods = []
    for child in plugin.render(body, spec, config):
        template = child["spec"]["template"] if child["kind"] == "Job" else None
        if template is None or template["metadata"]["labels"]["edgeloom.io/role"] != "worker":
            continue
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        pod["metadata"] = {**template["metadata"], "name": child["metadata"]["name"]}
        pods.append(pod["metadata"]["name"])
        plane.apply(pod, namespace=namespace)
    assert len(pods) == len(groups)
    profiles = {n.name: n.labels.get(PROFILE_LABEL) for n in DEFAULT_NODES}
    try:

        def placed() -> dict[str, str] | None:
            found = plane.kubectl_json("get", "pods", "-n", namespace)["items"]
            nodes = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in found}
            return nodes if all(nodes.get(p) for p in pods) else None

        nodes = wait_for(placed, 60, "the worker pods bound to nodes")
        for group, profile in groups.items():
            assert profiles[nodes[f"{name}-worker-{group}"]] == profile, (group, nodes)
    finally:
        plane.kubectl("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0")
