"""Kind plugins wired onto an injected kopf registry, and Kubernetes errors as typed errors."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from edgeloom.runtime.natsauth import Authority
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.handlers import Operator, register
from edgeloom_operators.kinds import default_plugins
from edgeloom_operators.kube import (
    Cause,
    Conflict,
    Forbidden,
    Immutable,
    Invalid,
    KubeError,
    NotFound,
    error_from_status,
)
from edgeloom_operators.plugin import KindPlugin, index
from edgeloom_operators.prunejob import PruneJobPlugin
from edgeloom_testkit.kinds.echoservice import EchoServicePlugin


def handlers_by_resource(registry: kopf.OperatorRegistry) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for registered in (registry._changing, registry._spawning, registry._watching):
        for handler in registered.get_all_handlers():
            name = handler.selector.any_name or handler.selector.plural
            out.setdefault(str(name), set()).add(str(handler.id))
    return out


def test_register_wires_each_plugins_hooks_on_the_given_registry_only() -> None:
    registry = kopf.OperatorRegistry()
    slot = register(registry, [*default_plugins(), EchoServicePlugin()])
    every_kind = {  # the reconciles, and the timer that renews NATS credentials
        "reconcile",
        "reconcile-on-resume",
        "reconcile-on-update/spec",
        "nats-credentials",
        "forget-deleted",  # the resource's own DELETED event drops its metric series
    }
    assert handlers_by_resource(registry) == {
        "splittrainingjobs": every_kind
        | {
            "run-state",  # external state: the finalizer waits on its cleanup
            "worker-health",  # its loop
        },
        "prunejobs": every_kind,
        "hatinferenceservices": every_kind | {"cloud-autoscaling"},  # its loop
        "echoservices": every_kind,
        "jobs": {"jobs-changed"},  # the child types the plugins observe
        "deployments": {"deployments-changed"},
    }
    assert kopf.get_default_registry() is not registry
    with pytest.raises(RuntimeError, match="not started"):
        slot.get()


def test_a_kind_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="PruneJob has two plugins"):
        register(kopf.OperatorRegistry(), [PruneJobPlugin(), PruneJobPlugin()])


def status_body(reason: str, message: str, causes: list[dict[str, str]]) -> str:
    return json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": reason,
            "message": message,
            "details": {"causes": causes},
        }
    )


def test_api_errors_map_onto_the_error_hierarchy_with_their_causes() -> None:
    immutable = error_from_status(
        422,
        status_body(
            "Invalid",
            'Job.batch "x-server" is invalid: spec.template: Invalid value: ...',
            [
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: ...: field is immutable",
                    "field": "spec.template",
                },
                {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.x"},
            ],
        ),
    )
    assert isinstance(immutable, Immutable) and isinstance(immutable, Invalid)
    assert immutable.fields == ("spec.template",)
    assert immutable.reason == "Invalid" and immutable.status == 422
    invalid = error_from_status(
        422,
        status_body(
            "Invalid",
            "bad",
            [{"reason": "FieldValueRequired", "message": "Required", "field": "spec.x"}],
        ),
    )
    assert type(invalid) is Invalid and invalid.fields == ("spec.x",)
    assert isinstance(error_from_status(404, status_body("NotFound", "gone", [])), NotFound)
    assert isinstance(error_from_status(409, status_body("AlreadyExists", "x", [])), Conflict)
    forbidden = error_from_status(403, status_body("Forbidden", "exceeded quota: no-secrets", []))
    assert isinstance(forbidden, Forbidden) and "quota" in forbidden.message
    other = error_from_status(500, b"<html>proxy error</html>", "Internal Server Error")
    assert type(other) is KubeError and other.reason == "Internal Server Error"


def prune_body(generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "edgeloom.io/v1alpha1",
        "kind": "PruneJob",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {"model": {"builtin": "minilm"}, "ratio": 0.2},
    }


class ImmutableKube:
    """Accepts every child but Jobs, whose pod template cannot change."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.events: list[tuple[str, str]] = []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Job":
            cause = Cause("spec.template", "FieldValueInvalid", "Invalid value: field is immutable")
            raise Immutable(422, "Invalid", "Job.batch is invalid", (cause,))
        self.applied.append(obj["kind"])
        return obj

    def event(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append((reason, message))

    def get_resource(self, *_: Any) -> None:
        return None  # the resource is gone by the time of the refresh: nothing to write


def test_a_spec_change_a_child_cannot_take_is_reported_naming_the_fields() -> None:
    kube = ImmutableKube()
    plugin: KindPlugin = PruneJobPlugin()
    config = OperatorConfig(nats_url="nats://n:4222")
    operator = Operator(kube, config, index([plugin]))  # type: ignore[arg-type]
    body = prune_body(generation=2)
    operator.reconcile(plugin, body, "update")
    assert kube.applied == ["Secret", "ConfigMap"]  # the NATS Secret before any child
    ((reason, message),) = kube.events
    assert reason == "SpecChangeNotApplied"
    assert message.startswith("Job p-pruner keeps its spec.template;")


class SecretKube(ImmutableKube):
    """Keeps what it applies, so a second reconcile finds the job's Secret."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, dict[str, Any]] = {}

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Secret":
            self.secrets[obj["metadata"]["name"]] = obj
        return super().apply(obj)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)


def test_job_credentials_are_minted_once_per_resource() -> None:
    kube = SecretKube()
    plugin: KindPlugin = PruneJobPlugin()
    config = OperatorConfig(nats_url="nats://n:4222", authority_secret="authority")
    issuer = Authority.new().issuer
    operator = Operator(kube, config, index([plugin]), issuer)  # type: ignore[arg-type]
    body = prune_body()
    operator.reconcile(plugin, body, "update")
    first = kube.secrets["p-nats"]["data"]["pruner.creds"]
    operator.reconcile(plugin, body, "update")
    assert (
        kube.applied.count("Secret") == 1
        and kube.secrets["p-nats"]["data"]["pruner.creds"] == first
    )
    body["metadata"]["uid"] = "a-new-namesake"
    operator.reconcile(plugin, body, "update")
    assert (
        kube.applied.count("Secret") == 2
        and kube.secrets["p-nats"]["data"]["pruner.creds"] != first
    )


def test_credentials_near_expiry_are_renewed_by_the_periodic_check() -> None:
    kube = SecretKube()
    plugin: KindPlugin = PruneJobPlugin()
    config = OperatorConfig(
        nats_url="nats://n:4222", authority_secret="authority", credential_lifetime_s=3600
    )
    operator = Operator(kube, config, index([plugin]), Authority.new().issuer)  # type: ignore[arg-type]
    body = prune_body()
    operator.renew_credentials(plugin, body)  # none yet: minted
    operator.renew_credentials(plugin, body)  # fresh: kept
    assert kube.applied.count("Secret") == 1
    operator.config = OperatorConfig(  # the same credentials now have a third of a day left
        nats_url="nats://n:4222", authority_secret="authority", credential_lifetime_s=86400
    )
    operator.renew_credentials(plugin, body)
    assert kube.applied.count("Secret") == 2
    assert [reason for reason, _ in kube.events] == ["CredentialsRenewed", "CredentialsRenewed"]
