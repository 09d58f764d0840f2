"""The generated Argo CD health checks, run in real Lua 5.1 inside Argo CD's sandbox (no string
or math library) on the statuses the operator really derives for each shape of kind."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51 as lua
import pytest
import yaml

from edgeloom.api.argocd import (
    ARGOCD_HEALTH_FILE,
    argocd_cm_patch,
    check_argocd_health,
    health_key,
    health_lua,
)
from edgeloom.api.registry import KindInfo, kinds
from edgeloom.api.resource import GROUP, VERSION
from edgeloom.api.status import Phase, set_summary_conditions
from edgeloom_operators.kinds import default_plugins
from edgeloom_operators.plugin import KindPlugin
from edgeloom_operators.status import AVAILABLE, INVALID_SPEC, Outcome, Verdict, derive_status
from edgeloom_testkit.gitops import HealthCheckError, argocd_health
from edgeloom_testkit.kinds.echoservice import EchoServicePlugin

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
JOBS = [p for p in default_plugins() if p.info.shape == "job"]
SERVICES = [p for p in default_plugins() if p.info.shape == "service"]
ECHO = EchoServicePlugin()

RUNNING = Outcome(Phase.RUNNING, "Running", "pods are running")
COMPLETED = Outcome(
    Phase.SUCCEEDED, "Completed", "every coordinating pod finished successfully", decisive=True
)
BACKOFF = Outcome(
    Phase.FAILED, "BackoffLimitExceeded", "x-server: Job has reached its backoff limit", True
)


def resource(info: KindInfo, status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    """The object Argo CD hands the script: the resource as the API server returns it."""
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": info.kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation},
    }
    if status is not None:
        obj["status"] = status
    return obj


def health(plugin: KindPlugin, status: dict[str, Any] | None, generation: int = 1) -> str:
    verdict = argocd_health(health_lua(plugin.info), resource(plugin.info, status, generation))
    return f"{verdict['status']}: {verdict['message']}"


def ended(phase: str, message: str) -> dict[str, Any]:
    """A coordinator's terminal report (what JobReporter.finish publishes)."""
    ready = "True" if phase == "Succeeded" else "False"
    reason = "Completed" if phase == "Succeeded" else "Failed"
    condition = {"type": "Ready", "status": ready, "reason": reason, "message": message}
    return {"phase": phase, "conditions": [{**condition, "lastTransitionTime": T0.isoformat()}]}


def test_every_kind_has_a_check_under_its_argocd_key_and_the_chart_file_is_current() -> None:
    patch = argocd_cm_patch(kinds().values())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert set(patch["data"]) == {f"resource.customizations.health.{GROUP}_{k}" for k in kinds()}
    assert check_argocd_health(ROOT) == []
    committed = yaml.safe_load((ROOT / ARGOCD_HEALTH_FILE).read_text())
    assert committed == patch  # literal blocks load back to the exact scripts
    # a kind registered later gets its check with nothing written for it
    later = dataclasses.replace(kinds()["PruneJob"], kind="DistillJob")
    assert health_key(later) in argocd_cm_patch([*kinds().values(), later])["data"]


@pytest.mark.parametrize("plugin", JOBS, ids=[p.info.kind for p in JOBS])
def test_a_job_is_progressing_then_healthy_once_its_job_confirms_success(
    plugin: KindPlugin,
) -> None:
    pending = derive_status(plugin, 1, None, Outcome(), now=T0)
    assert health(plugin, pending).startswith("Progressing: Pending")
    running = derive_status(plugin, 1, pending, RUNNING, {"phase": "Running"}, now=T0)
    assert health(plugin, running).startswith("Progressing: Running")
    # the job says it is done; until its coordinator's Job confirms it, it is still progressing
    report = ended("Succeeded", "5 rounds completed")
    awaiting = derive_status(plugin, 1, running, RUNNING, report, now=T0)
    assert health(plugin, awaiting).startswith("Progressing: Running (AwaitingConfirmation)")
    done = derive_status(plugin, 1, awaiting, COMPLETED, report, now=T0)
    assert health(plugin, done) == "Healthy: Succeeded (Completed): 5 rounds completed"
    # a newer spec the operator has not observed yet is not the finished one
    assert health(plugin, done, generation=2) == (
        "Progressing: Waiting for the edgeloom operator to observe generation 2"
    )


@pytest.mark.parametrize("plugin", JOBS, ids=[p.info.kind for p in JOBS])
def test_a_failed_job_is_degraded_with_its_reason(plugin: KindPlugin) -> None:
    running = derive_status(plugin, 1, None, RUNNING, {"phase": "Running"}, now=T0)
    failed = derive_status(plugin, 1, running, BACKOFF, now=T0)
    assert health(plugin, failed) == (
        "Degraded: Failed (BackoffLimitExceeded): x-server: Job has reached its backoff limit"
    )
    # in its own words when it reported them (a model path that does not exist)
    report = ended("Failed", "no model at /models/x")
    reported = derive_status(plugin, 1, running, BACKOFF, report, now=T0)
    assert health(plugin, reported).endswith("no model at /models/x")
    assert health(plugin, reported).startswith("Degraded: Failed")


@pytest.mark.parametrize(
    "plugin", [*JOBS, *SERVICES, ECHO], ids=[p.info.kind for p in [*JOBS, *SERVICES, ECHO]]
)
def test_an_invalid_spec_is_degraded(plugin: KindPlugin) -> None:
    """The status the operator writes for a spec it cannot parse (handlers.Operator)."""
    conditions = set_summary_conditions([], Phase.FAILED, False, INVALID_SPEC, "spec.ratio", 1)
    status = plugin.info.status_model(phase=Phase.FAILED, observed_generation=1)
    status.conditions = conditions
    assert health(plugin, status.to_wire()) == "Degraded: Failed (InvalidSpec): spec.ratio"


def test_a_job_that_dropped_participants_is_still_progressing() -> None:
    (split,) = [p for p in JOBS if p.info.kind == "SplitTrainingJob"]
    degraded = derive_status(split, 1, None, RUNNING, {"phase": "Degraded"}, now=T0)
    assert health(split, degraded).startswith("Progressing: Degraded")


def serving(phase: Phase, reason: str, message: str) -> Outcome:
    """What a service's Deployments prove (edgeloom_operators.status.deployment_outcome)."""
    up = phase == Phase.RUNNING and reason == AVAILABLE
    verdict: Verdict = ("True" if up else "False", reason, message)
    return Outcome(phase, reason, message, True, up, {AVAILABLE: verdict})


@pytest.mark.parametrize("plugin", [*SERVICES, ECHO], ids=[p.info.kind for p in [*SERVICES, ECHO]])
def test_a_service_is_healthy_while_available_and_degraded_once_its_rollout_failed(
    plugin: KindPlugin,
) -> None:
    rolling = derive_status(plugin, 1, None, serving(Phase.PENDING, "Progressing", "0/1"), now=T0)
    assert health(plugin, rolling).startswith("Progressing: Pending")
    up = derive_status(plugin, 1, rolling, serving(Phase.RUNNING, AVAILABLE, "1/1 available"))
    assert health(plugin, up) == "Healthy: Running (Available): 1/1 available"
    # a lost pod: Progressing, as Argo CD reads a Deployment short of replicas
    lost = derive_status(plugin, 1, up, serving(Phase.DEGRADED, "ReplicasUnavailable", "0/1"))
    assert health(plugin, lost) == "Progressing: Degraded (ReplicasUnavailable): 0/1"
    stuck = serving(Phase.FAILED, "ProgressDeadlineExceeded", "x-echo: deadline exceeded")
    failed = derive_status(plugin, 1, lost, stuck)
    assert health(plugin, failed) == (
        "Degraded: Failed (ProgressDeadlineExceeded): x-echo: deadline exceeded"
    )


@pytest.mark.parametrize(
    "status",
    [None, {}, {"observedGeneration": 1}, {"observedGeneration": 1, "conditions": []}],
    ids=["no-status", "empty", "no-conditions", "empty-conditions"],
)
def test_a_resource_the_operator_has_not_reported_on_is_progressing(
    status: dict[str, Any] | None,
) -> None:
    assert health(JOBS[0], status).startswith("Progressing: ")


def test_sparse_conditions_do_not_break_the_script() -> None:
    conditions = [{"status": "True"}, {"type": "Ready", "status": "True"}]
    status = {"observedGeneration": 1, "conditions": conditions}
    assert health(JOBS[0], status) == "Healthy: Unknown"


def test_the_harness_refuses_what_argo_cds_lua_would() -> None:
    with pytest.raises(lua.LuaError, match="string"):  # Argo CD opens no string library
        argocd_health('return {status = string.format("%s", "Healthy")}', {})
    with pytest.raises(lua.LuaSyntaxError):  # Lua 5.3 integer division
        argocd_health('return {status = "Healthy", message = 3 // 2}', {})
    with pytest.raises(HealthCheckError, match="'Fine'"):
        argocd_health('return {status = "Fine"}', {})


GITOPS = ROOT / "examples" / "gitops"


def documents(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The objects of a multi-document example, by (kind, name)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_the_flux_example_waits_on_the_operator_then_on_every_resource() -> None:
    flux = documents(GITOPS / "flux" / "kustomizations.yaml")
    operator = flux[("Kustomization", "edgeloom-operator")]["spec"]
    jobs = flux[("Kustomization", "edgeloom-jobs")]["spec"]
    assert (jobs["wait"], jobs["dependsOn"]) == (True, [{"name": "edgeloom-operator"}])
    assert jobs["timeout"] and operator["timeout"]
    # the operator layer's path holds the HelmRelease its health checks name, and that release
    # installs this repository's chart, CRDs included
    released = documents(ROOT / operator["path"] / "helmrelease.yaml")
    checked = {(c["kind"], c["name"], c["namespace"]) for c in operator["healthChecks"]}
    (release,) = [d for (kind, _), d in released.items() if kind == "HelmRelease"]
    meta = release["metadata"]
    assert ("HelmRelease", meta["name"], meta["namespace"]) in checked
    assert (ROOT / release["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    assert release["spec"]["install"]["crds"] == "Create"
    source = release["spec"]["chart"]["spec"]["sourceRef"]["name"]
    assert ("GitRepository", source) in flux


def test_the_argocd_example_syncs_the_chart_before_the_resources() -> None:
    apps = documents(GITOPS / "argocd" / "applications.yaml")
    chart, jobs = apps[("Application", "edgeloom")], apps[("Application", "edgeloom-jobs")]

    def wave(app: dict[str, Any]) -> int:
        return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])

    assert wave(chart) < wave(jobs)
    assert (ROOT / chart["spec"]["source"]["path"] / "Chart.yaml").is_file()
    assert "SkipDryRunOnMissingResource=true" in jobs["spec"]["syncPolicy"]["syncOptions"]
    # no chart-generated CA under helm template: the certificate comes from cert-manager
    values = chart["spec"]["source"]["helm"]["valuesObject"]
    assert values["nats"]["tls"]["certManager"]["enabled"] is True
