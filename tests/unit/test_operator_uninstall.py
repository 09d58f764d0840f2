"""The chart's pre-delete hook: delete every edgeloom resource, wait while the operator
releases their finalizers, and never strand one silently."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from edgeloom.api.registry import KindInfo
from edgeloom_operators.handlers import FINALIZER
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_operators.splittraining import SplitTrainingPlugin
from edgeloom_operators.uninstall import Uninstall, main

SPLIT, PRUNE = SplitTrainingPlugin().info, PruneJobPlugin().info
OPERATOR = ("edgeloom-system", "edgeloom-operator")


def resource(name: str, namespace: str, finalizers: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "finalizers": finalizers}}


class ClusterKube:
    """Resources by kind; a deleted one goes away after ``release_after`` listings (the
    operator releasing its finalizer), or never when no operator is there."""

    def __init__(self, operator_replicas: int | None, release_after: int | None = 2) -> None:
        self.operator_replicas = operator_replicas
        self.release_after = release_after
        self.objects: dict[str, list[dict[str, Any]]] = {
            "SplitTrainingJob": [resource("mnist", "team-a", [FINALIZER])],
            "PruneJob": [resource("minilm", "team-b", [])],
        }
        self.deleted: list[str] = []
        self.listings: dict[str, int] = {}

    def list_resources(self, info: KindInfo, namespace: str | None) -> list[dict[str, Any]]:
        out = []
        for obj in self.objects[info.kind]:
            meta = obj["metadata"]
            if namespace not in (None, meta["namespace"]):
                continue
            key = f"{info.kind}/{meta['name']}"
            if key in self.deleted:
                self.listings[key] = self.listings.get(key, 0) + 1
                if self.release_after is not None and self.listings[key] > self.release_after:
                    continue
            out.append(obj)
        return out

    def delete_resource(self, info: KindInfo, namespace: str, name: str) -> None:
        self.deleted.append(f"{info.kind}/{name}")

    def available_replicas(self, namespace: str, name: str) -> int | None:
        assert (namespace, name) == OPERATOR
        return self.operator_replicas


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def uninstall(kube: ClusterKube, namespaces: list[str] | None = None) -> tuple[Uninstall, Clock]:
    clock = Clock()
    hook = Uninstall(kube, [SPLIT, PRUNE], namespaces or [], OPERATOR, clock, clock.sleep)  # type: ignore[arg-type]
    return hook, clock


def test_every_resource_is_deleted_and_waited_for() -> None:
    kube = ClusterKube(operator_replicas=1)
    hook, clock = uninstall(kube)
    assert hook.run(timeout_s=60, interval_s=2) is True
    assert kube.deleted == ["SplitTrainingJob/mnist", "PruneJob/minilm"]
    assert clock.now > 0 and not hook.remaining()


def test_only_the_watched_namespaces_are_emptied() -> None:
    kube = ClusterKube(operator_replicas=1)
    hook, _ = uninstall(kube, ["team-b"])
    assert hook.run(timeout_s=60) is True
    assert kube.deleted == ["PruneJob/minilm"]


@pytest.mark.parametrize("replicas", [0, None], ids=["scaled-to-zero", "gone"])
def test_without_an_operator_to_release_finalizers_nothing_is_deleted(
    replicas: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    kube = ClusterKube(operator_replicas=replicas, release_after=None)
    hook, clock = uninstall(kube)
    with caplog.at_level(logging.ERROR):
        assert hook.run(timeout_s=60) is False
    assert kube.deleted == [] and clock.now == 0  # fails at once
    (record,) = caplog.records
    message = record.getMessage()
    assert "edgeloom-system/edgeloom-operator has no available replica" in message
    assert f"SplitTrainingJob team-a/mnist, finalizers {FINALIZER}" in message
    assert "kubectl patch" in message and '"finalizers":null' in message


def test_a_resource_that_stays_fails_the_hook_after_the_timeout_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = ClusterKube(operator_replicas=1, release_after=None)
    hook, clock = uninstall(kube)
    with caplog.at_level(logging.ERROR):
        assert hook.run(timeout_s=30, interval_s=2) is False
    assert clock.now >= 30
    (record,) = caplog.records
    assert "still there after 30 s: SplitTrainingJob team-a/mnist" in record.getMessage()


def test_the_operator_deployment_must_be_named_with_its_namespace() -> None:
    with pytest.raises(SystemExit):
        main(["--operator", "edgeloom-operator"])
