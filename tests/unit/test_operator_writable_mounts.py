"""Role pods write only where something writable is mounted.

Every role pod has a read-only root filesystem, so what a role writes must land on an emptyDir
or on the PersistentVolumeClaim its spec names. The paths are not restated here: they come
from the pod the operator renders, read the way ``edgeloom serve`` reads them (its argument
parser over the container's environment), and from the PruneJob pruner's own choice of
output folder.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml

from edgeloom.api.kinds.prunejob import PruneJobSpec
from edgeloom.api.resource import InvalidResource, parse_resource
from edgeloom.apps.comp.pruner import Pruning
from edgeloom.cli.main import build_parser
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.plugin import KindPlugin
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_operators.splittraining import SplitTrainingPlugin
from edgeloom_testkit.kinds.echoservice import EchoServicePlugin

ROOT = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig(
    nats_url="tls://edgeloom-nats.edgeloom-system.svc:4222",
    services_image="registry.example/edgeloom-services:0.1.0",
)
prunejob = PruneJobPlugin()


def body_of(example: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / example).read_text())
    body["metadata"] |= {"namespace": "research", "uid": "0000-1111", "generation": 1}
    return body


ECHO = {
    "apiVersion": "edgeloom.io/v1alpha1",
    "kind": "EchoService",
    "metadata": {"name": "echo", "namespace": "research", "uid": "0000-1111", "generation": 1},
    "spec": {"replicas": 1},
}


def pods(plugin: KindPlugin, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of every workload the plugin renders."""
    spec: Any = parse_resource(body, plugin.info.spec_model, plugin.info.kind).spec
    kids = plugin.render(body, spec, CONFIG)
    return [k["spec"]["template"]["spec"] for k in kids if k["kind"] in ("Job", "Deployment")]


def writable_mounts(pod: dict[str, Any]) -> dict[PurePosixPath, str]:
    """Mount path -> volume type ("emptyDir", "persistentVolumeClaim") of the container's
    writable mounts."""
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        kinds = [k for k in ("emptyDir", "persistentVolumeClaim") if k in volume]
        if kinds and not mount.get("readOnly"):
            out[PurePosixPath(mount["mountPath"])] = kinds[0]
    return out


def lands_on(path: Path | str, mounts: dict[PurePosixPath, str]) -> str | None:
    """The volume type of the writable mount ``path`` lies in (itself or below), or None."""
    target = PurePosixPath(path)
    for mount, kind in mounts.items():
        if target == mount or mount in target.parents:
            return kind
    return None


def serve_args(pod: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """``edgeloom serve``'s arguments in this pod: its parser over the container's env."""
    (container,) = pod["containers"]
    for var in container["env"]:
        if "value" in var:
            monkeypatch.setenv(var["name"], var["value"])
    return build_parser().parse_args(["serve"])


def default_output(run_dir: Path | None, name: str) -> Path:
    """Where the pruner puts its model when the spec has no ``output.path``."""
    ctx = SimpleNamespace(run_dir=run_dir, name=name)
    return Pruning(ctx=cast(Any, ctx), spec=cast(Any, None), reporter=cast(Any, None),
                   metrics=cast(Any, None))._default_output()  # fmt: skip


CASES = [
    (SplitTrainingPlugin(), body_of("splittraining-mnist1d.yaml")),
    (prunejob, body_of("prunejob-tiny-llama.yaml")),
    (EchoServicePlugin(), ECHO),
]


@pytest.mark.parametrize(("plugin", "body"), CASES, ids=[p.info.kind for p, _ in CASES])
def test_every_role_runs_in_a_writable_work_folder(
    plugin: KindPlugin, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for pod in pods(plugin, body):
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = writable_mounts(pod)
        assert lands_on(container["workingDir"], mounts) == "emptyDir"
        assert lands_on("/tmp", mounts) == "emptyDir"
        with monkeypatch.context() as env:
            run_dir = serve_args(pod, env).run_dir
        assert run_dir == Path(container["workingDir"])
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_a_prunejob_without_output_path_saves_its_model_in_the_work_emptydir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = body_of("prunejob-tiny-llama.yaml")
    assert "path" not in body["spec"].get("output", {})
    (pod,) = pods(prunejob, body)
    run_dir = serve_args(pod, monkeypatch).run_dir
    assert run_dir is not None  # else the image's working directory, read-only
    output = default_output(run_dir, body["metadata"]["name"])
    assert lands_on(output, writable_mounts(pod)) == "emptyDir", output


def test_a_prunejob_output_claim_is_mounted_read_write_at_the_output_path() -> None:
    body = body_of("prunejob-tiny-llama.yaml")
    body["spec"]["output"] = {"volumeClaim": "pruned-models", "path": "/models/llama-20"}
    (pod,) = pods(prunejob, body)
    spec = parse_resource(body, PruneJobSpec, "PruneJob").spec
    assert spec.output.path is not None
    assert lands_on(spec.output.path, writable_mounts(pod)) == "persistentVolumeClaim"
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert [v["persistentVolumeClaim"] for v in claims] == [{"claimName": "pruned-models"}]

    without = copy.deepcopy(body)
    del without["spec"]["output"]["volumeClaim"]
    (plain,) = pods(prunejob, without)
    assert not [v for v in plain["volumes"] if "persistentVolumeClaim" in v]


@pytest.mark.parametrize("path", [None, "models/llama-20"], ids=["no-path", "relative"])
def test_a_claim_needs_an_absolute_path_to_mount_at(path: str | None) -> None:
    body = body_of("prunejob-tiny-llama.yaml")
    body["spec"]["output"] = {"volumeClaim": "pruned-models", **({"path": path} if path else {})}
    with pytest.raises(InvalidResource, match="volumeClaim needs an absolute path"):
        parse_resource(body, PruneJobSpec, "PruneJob")
