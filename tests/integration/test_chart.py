"""The Helm chart, linted and rendered by the real ``helm`` built by ``controlplane/build.sh``.

Rendered manifests are parsed and checked for what the operator and its users rely on: the kopf
command line, a hardened pod, NATS wiring through a Secret, least-privilege RBAC, aggregated
user roles, the NATS JetStream server, ``helm test`` pods, monitoring (metrics port, scrape
annotations, PodMonitor, ServiceMonitor, PrometheusRule, Grafana dashboard ConfigMaps) and the
values schema.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgeloom"
RELEASE = "demo"
NAMESPACE = "edgeloom-system"
FULLNAME = "demo-edgeloom"

# The first test may build helm from source when the cache is cold (tens of minutes).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

KOPF_COMMAND = [
    "kopf",
    "run",
    "--standalone",
    "--all-namespaces",
    "--liveness=http://0.0.0.0:8080/healthz",
    "-m",
    "edgeloom_operators.main",
]
MONITORING_ON = (
    "monitoring.podMonitor.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
)
MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
DASHBOARDS = CHART / "dashboards"
CRUD = ("get", "list", "watch", "create", "patch", "update", "delete")
Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


@dataclass(frozen=True)
class Helm:
    """The real helm binary, pinned to the control plane's Kubernetes version.

    helm built from source without the Makefile's ldflags assumes Kubernetes v1.20 for
    ``template`` and ``lint``, which the chart's ``kubeVersion: >=1.30.0-0`` rejects.
    """

    binary: Path
    kube_version: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args, "--kube-version", self.kube_version],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def template(self, *sets: str) -> subprocess.CompletedProcess[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for item in sets:
            args += ["--set", item]
        return self.run(*args)

    def render(self, *sets: str) -> list[dict[str, Any]]:
        proc = self.template(*sets)
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def helm() -> Helm:
    proc = subprocess.run(
        [str(ROOT / "controlplane" / "build.sh")], capture_output=True, text=True, timeout=3500
    )
    if proc.returncode != 0:
        pytest.fail(f"controlplane/build.sh failed:\n{proc.stderr[-3000:]}")
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    assert binary.is_file(), f"build.sh printed no bin dir with helm: {proc.stdout!r}"
    versions = (ROOT / "controlplane" / "versions.env").read_text()
    match = re.search(r"^KUBE_VERSION=(\S+)", versions, re.MULTILINE)
    assert match, "controlplane/versions.env has no KUBE_VERSION"
    return Helm(binary, match.group(1))


@pytest.fixture(scope="module")
def default_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render()


def crd_plurals() -> set[str]:
    """Plurals of the edgeloom.io kinds the repository's generated CRDs define."""
    plurals = set()
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["group"] == "edgeloom.io":
            plurals.add(crd["spec"]["names"]["plural"])
    return plurals


def find(docs: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def kinds(docs: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def container(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (only,) = find(docs, kind, name)["spec"]["template"]["spec"]["containers"]
    return only


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def flat_rules(rules: Iterable[dict[str, Any]]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def namespaced_operator_rules(plurals: set[str]) -> set[Rule]:
    rules: set[Rule] = set()
    for p in plurals:
        rules |= {("edgeloom.io", p, v) for v in ("get", "list", "watch", "patch", "update")}
        rules |= {("edgeloom.io", f"{p}/status", v) for v in ("get", "patch", "update")}
        rules.add(("edgeloom.io", f"{p}/finalizers", "update"))
    rules |= {("batch", "jobs", v) for v in CRUD}
    rules |= {("", r, v) for r in ("configmaps", "secrets", "services") for v in CRUD}
    rules |= {("apps", "deployments", v) for v in CRUD}
    rules |= {("", "pods", v) for v in ("get", "list", "watch", "patch", "delete")}
    rules |= {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    return rules


CLUSTER_OPERATOR_RULES: set[Rule] = {
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
    *(("", "namespaces", v) for v in ("get", "list", "watch")),
}


def test_chart_crds_are_the_generated_crds() -> None:
    root = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert root, "no generated CRDs under crds/"
    assert chart.keys() == root.keys()
    for name, content in root.items():
        assert chart[name] == content, f"charts/edgeloom/crds/{name} differs from crds/{name}"


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("nats.url=nats://nats.example:4222",),
        ("operator.watchNamespaces={team-a,team-b}",),
        MONITORING_ON,
    ],
    ids=["defaults", "external-nats", "watch-namespaces", "monitoring"],
)
def test_lint_strict_is_clean(helm: Helm, sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        args += ["--set", item]
    proc = helm.run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_chart_refuses_to_render_without_any_nats(helm: Helm) -> None:
    proc = helm.template("nats.enabled=false")
    assert proc.returncode != 0
    assert "nats.enabled is false and nats.url is empty" in proc.stderr


def test_operator_deployment_runs_kopf_in_a_hardened_pod(default_docs: list[dict]) -> None:
    deployment = find(default_docs, "Deployment", f"{FULLNAME}-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULLNAME}-operator"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    operator = container(default_docs, "Deployment", f"{FULLNAME}-operator")
    assert operator["command"] == KOPF_COMMAND
    assert operator["image"] == "ghcr.io/edgeloom/edgeloom-operator:0.1.0"  # tag = appVersion
    assert operator["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in operator["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "http-health"}, probe
    assert operator["resources"]["requests"]["memory"] == "128Mi"
    sa = find(default_docs, "ServiceAccount", f"{FULLNAME}-operator")
    assert sa["metadata"]["namespace"] == NAMESPACE


def test_operator_env_wires_nats_credentials_and_the_services_image(helm: Helm) -> None:
    docs = helm.render(
        "services.image.tag=v9",
        "services.image.pullPolicy=Always",
        "operator.extraEnv[0].name=EDGELOOM_LOG_LEVEL",
        "operator.extraEnv[0].value=debug",
    )
    operator = container(docs, "Deployment", f"{FULLNAME}-operator")
    env = env_of(operator)
    assert env["EDGELOOM_NATS_URL"]["value"] == f"nats://{FULLNAME}-nats.{NAMESPACE}.svc:4222"
    secret = f"{FULLNAME}-nats-auth"
    assert env["EDGELOOM_NATS_USER"]["valueFrom"] == {
        "secretKeyRef": {"name": secret, "key": "user"}
    }
    assert env["EDGELOOM_NATS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": secret, "key": "password"}
    }
    assert env["EDGELOOM_SERVICES_IMAGE"]["value"] == "ghcr.io/edgeloom/edgeloom-services:v9"
    assert env["EDGELOOM_SERVICES_IMAGE_PULL_POLICY"]["value"] == "Always"
    assert env["EDGELOOM_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert operator["env"][-1] == {"name": "EDGELOOM_LOG_LEVEL", "value": "debug"}

    auth = find(docs, "Secret", secret)
    assert auth["metadata"]["namespace"] == NAMESPACE
    assert set(auth["data"]) == {"user", "password"}
    assert base64.b64decode(auth["data"]["user"]) == b"edgeloom"
    assert re.fullmatch(rb"[A-Za-z0-9]{32}", base64.b64decode(auth["data"]["password"]))


def test_operator_rbac_is_least_privilege(default_docs: list[dict]) -> None:
    plurals = crd_plurals()
    assert {"splittrainingjobs", "prunejobs"} <= plurals
    role = find(default_docs, "ClusterRole", f"{FULLNAME}-operator")
    assert flat_rules(role["rules"]) == namespaced_operator_rules(plurals) | CLUSTER_OPERATOR_RULES
    binding = find(default_docs, "ClusterRoleBinding", f"{FULLNAME}-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{FULLNAME}-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULLNAME}-operator", "namespace": NAMESPACE}
    ]
    assert not [d for d in default_docs if d["kind"] in ("Role", "RoleBinding")]
    for doc in default_docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            assert "*" not in set(strings(doc["rules"])), doc["metadata"]["name"]


def test_user_roles_aggregate_into_edit_admin_and_view(default_docs: list[dict]) -> None:
    plurals = crd_plurals()
    edit = find(default_docs, "ClusterRole", f"{FULLNAME}-edit")
    labels = edit["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in labels
    verbs = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    assert flat_rules(edit["rules"]) == {("edgeloom.io", p, v) for p in plurals for v in verbs}

    view = find(default_docs, "ClusterRole", f"{FULLNAME}-view")
    labels = view["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in labels
    assert flat_rules(view["rules"]) == {
        ("edgeloom.io", r, v)
        for p in plurals
        for r in (p, f"{p}/status")
        for v in ("get", "list", "watch")
    }


def test_watch_namespaces_use_roles_in_each_namespace(helm: Helm) -> None:
    docs = helm.render("operator.watchNamespaces={team-a,team-b}")
    operator = container(docs, "Deployment", f"{FULLNAME}-operator")
    expected = [a for a in KOPF_COMMAND if a != "--all-namespaces"]
    expected[3:3] = ["--namespace=team-a", "--namespace=team-b"]
    assert operator["command"] == expected

    namespaced = namespaced_operator_rules(crd_plurals())
    for ns in ("team-a", "team-b"):
        role = next(d for d in docs if d["kind"] == "Role" and d["metadata"].get("namespace") == ns)
        assert flat_rules(role["rules"]) == namespaced
        binding = next(
            d for d in docs if d["kind"] == "RoleBinding" and d["metadata"].get("namespace") == ns
        )
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert len([d for d in docs if d["kind"] == "Role"]) == 2
    # Cluster-wide, the operator keeps only what kopf reads across namespaces.
    cluster_role = find(docs, "ClusterRole", f"{FULLNAME}-operator")
    assert flat_rules(cluster_role["rules"]) == CLUSTER_OPERATOR_RULES


def test_nats_runs_jetstream_with_auth_by_default(default_docs: list[dict]) -> None:
    sts = find(default_docs, "StatefulSet", f"{FULLNAME}-nats")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-nats-headless"
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["automountServiceAccountToken"] is False
    nats = container(default_docs, "StatefulSet", f"{FULLNAME}-nats")
    assert nats["image"] == "nats:2.12-alpine"
    assert nats["securityContext"]["readOnlyRootFilesystem"] is True
    assert {p["name"]: p["containerPort"] for p in nats["ports"]}["nats"] == 4222
    assert {p["name"]: p["containerPort"] for p in nats["ports"]}["monitor"] == 8222
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert nats[probe]["httpGet"]["path"].startswith("/healthz"), probe
        assert nats[probe]["httpGet"]["port"] == "monitor"
    env = env_of(nats)
    secret = f"{FULLNAME}-nats-auth"
    assert env["NATS_USER"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "user"}
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "password"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]
    assert {"name": "data", "mountPath": "/data"} in nats["volumeMounts"]

    conf = find(default_docs, "ConfigMap", f"{FULLNAME}-nats-config")["data"]["nats.conf"]
    assert re.search(r"jetstream \{\s*store_dir: /data", conf)
    assert re.search(r"^max_payload: 8MB$", conf, re.MULTILINE)
    assert re.search(r"authorization \{\s*user: \$NATS_USER\s*password: \$NATS_PASSWORD", conf)
    assert "cluster {" not in conf

    client = find(default_docs, "Service", f"{FULLNAME}-nats")
    assert client["spec"]["type"] == "ClusterIP"
    assert {"name": "nats", "port": 4222, "targetPort": "nats", "protocol": "TCP"} in client[
        "spec"
    ]["ports"]
    headless = find(default_docs, "Service", f"{FULLNAME}-nats-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for service in (client, headless):
        selector = service["spec"]["selector"]
        assert selector.items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_nats_values_reach_the_server(helm: Helm) -> None:
    docs = helm.render(
        "nats.replicas=3",
        "nats.maxPayload=16MB",
        "nats.jetstream.storage.size=50Gi",
        "nats.jetstream.storage.storageClassName=fast",
    )
    sts = find(docs, "StatefulSet", f"{FULLNAME}-nats")
    assert sts["spec"]["replicas"] == 3
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    conf = find(docs, "ConfigMap", f"{FULLNAME}-nats-config")["data"]["nats.conf"]
    assert re.search(r"^max_payload: 16MB$", conf, re.MULTILINE)
    routes = re.findall(r"nats://(\S+):6222", conf)
    assert routes == [
        f"{FULLNAME}-nats-{i}.{FULLNAME}-nats-headless.{NAMESPACE}.svc" for i in range(3)
    ]


def test_the_health_port_moves_kopfs_endpoint_and_the_container_port(helm: Helm) -> None:
    docs = helm.render("operator.healthPort=18080")
    operator = container(docs, "Deployment", f"{FULLNAME}-operator")
    assert "--liveness=http://0.0.0.0:18080/healthz" in operator["command"]
    assert {"name": "http-health", "containerPort": 18080, "protocol": "TCP"} in operator["ports"]
    service = find(docs, "Service", f"{FULLNAME}-operator")
    assert service["spec"]["ports"][0]["targetPort"] == "http-health"


def test_external_nats_url_replaces_the_chart_nats(helm: Helm) -> None:
    url = "nats://nats.example:4222"
    docs = helm.render(f"nats.url={url}")
    names = kinds(docs)
    chart_nats = {n for n in names if n[1].startswith(f"{FULLNAME}-nats")}
    assert chart_nats == set(), chart_nats
    assert ("Pod", f"{FULLNAME}-test-nats") not in names
    env = env_of(container(docs, "Deployment", f"{FULLNAME}-operator"))
    assert env["EDGELOOM_NATS_URL"]["value"] == url
    assert "EDGELOOM_NATS_USER" not in env  # credentials, if any, are in the URL

    docs = helm.render(f"nats.url={url}", "nats.auth.existingSecret=nats-creds")
    env = env_of(container(docs, "Deployment", f"{FULLNAME}-operator"))
    assert env["EDGELOOM_NATS_USER"]["valueFrom"]["secretKeyRef"]["name"] == "nats-creds"
    assert env["EDGELOOM_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "nats-creds"
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_existing_secret_replaces_the_generated_one(helm: Helm) -> None:
    docs = helm.render("nats.auth.existingSecret=nats-creds")
    assert not [d for d in docs if d["kind"] == "Secret"]
    nats_env = env_of(container(docs, "StatefulSet", f"{FULLNAME}-nats"))
    operator_env = env_of(container(docs, "Deployment", f"{FULLNAME}-operator"))
    for env, key in ((nats_env, "NATS_PASSWORD"), (operator_env, "EDGELOOM_NATS_PASSWORD")):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "nats-creds", "key": "password"}


def test_helm_test_pods_probe_the_operator_and_nats(default_docs: list[dict]) -> None:
    tests = [d for d in default_docs if d["kind"] == "Pod"]
    assert {p["metadata"]["name"] for p in tests} == {
        f"{FULLNAME}-test-operator-health",
        f"{FULLNAME}-test-nats",
    }
    for pod in tests:
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    health = find(default_docs, "Pod", f"{FULLNAME}-test-operator-health")
    (probe,) = health["spec"]["containers"]
    assert probe["command"][:2] == ["python", "-c"]
    assert f"http://{FULLNAME}-operator.{NAMESPACE}.svc:8080/healthz" in probe["command"][2]
    service = find(default_docs, "Service", f"{FULLNAME}-operator")
    assert service["spec"]["ports"] == [
        {"name": "http-health", "port": 8080, "targetPort": "http-health", "protocol": "TCP"},
        {"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"},
    ]
    operator = container(default_docs, "Deployment", f"{FULLNAME}-operator")
    assert {"name": "http-health", "containerPort": 8080, "protocol": "TCP"} in operator["ports"]
    pod_labels = find(default_docs, "Deployment", f"{FULLNAME}-operator")["spec"]["template"][
        "metadata"
    ]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    nats_test = find(default_docs, "Pod", f"{FULLNAME}-test-nats")
    (check,) = nats_test["spec"]["containers"]
    script = check["command"][2]
    assert f"{FULLNAME}-nats.{NAMESPACE}.svc" in script
    assert ":8222/healthz" in script and "CONNECT" in script
    assert env_of(check)["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        f"{FULLNAME}-nats-auth"
    )


def test_names_and_common_labels_follow_values(helm: Helm) -> None:
    docs = helm.render("fullnameOverride=loom", "commonLabels.team=ml")
    find(docs, "Deployment", "loom-operator")
    find(docs, "StatefulSet", "loom-nats")
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["team"] == "ml", doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        (("operator.replicas=-1",), "replicas"),
        (("operator.replicas=2",), "replicas"),
        (("opertor.replicas=1",), "opertor"),
        (("nats.image.pullPolicy=Sometimes",), "pullPolicy"),
        (("operator.watchNamespaces={Team_A}",), "watchNamespaces"),
        (("operator.metricsPort=80",), "metricsPort"),
        (("prometheus.url=prometheus:9090",), "url"),
        (("prometheus.checkIntervalSeconds=0",), "checkIntervalSeconds"),
        (("monitoring.podMonitor.interval=30",), "interval"),
        (("monitoring.prometheusRule.staleFor=five minutes",), "staleFor"),
        (("monitoring.dashbords.enabled=true",), "dashbords"),
        (("monitoring.prometheusRule.pruneStalledFor=30m",), "pruneStalledFor"),
    ],
    ids=[
        "negative-replicas",
        "two-operators",
        "unknown-top-level-key",
        "pull-policy",
        "namespace",
        "privileged-metrics-port",
        "prometheus-url-scheme",
        "zero-check-interval",
        "interval-without-unit",
        "duration",
        "unknown-monitoring-key",
        "stall-threshold-of-one-kind",  # one stalledFor for every kind now
    ],
)
def test_schema_rejects_bad_values_naming_the_field(
    helm: Helm, sets: tuple[str, ...], field: str
) -> None:
    proc = helm.template(*sets)
    assert proc.returncode != 0, f"{sets} rendered"
    assert "schema" in proc.stderr
    assert field in proc.stderr, proc.stderr


def test_operator_exports_metrics_on_its_pod_ip_by_default(default_docs: list[dict]) -> None:
    deployment = find(default_docs, "Deployment", f"{FULLNAME}-operator")
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9400",
        "prometheus.io/path": "/metrics",
    }
    operator = container(default_docs, "Deployment", f"{FULLNAME}-operator")
    assert {"name": "metrics", "containerPort": 9400, "protocol": "TCP"} in operator["ports"]
    env = env_of(operator)
    assert env["EDGELOOM_METRICS_PORT"]["value"] == "9400"
    assert env["EDGELOOM_METRICS_ADDR"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["EDGELOOM_HEALTH_INTERVAL_SECONDS"]["value"] == "15"
    assert "EDGELOOM_PROMETHEUS_URL" not in env  # the Prometheus-driven loops stay off
    assert not MONITORING_KINDS & {d["kind"] for d in default_docs}


def test_metrics_and_prometheus_values_reach_the_operator(helm: Helm) -> None:
    docs = helm.render(
        "operator.metricsPort=9500",
        "prometheus.url=http://prometheus.monitoring.svc:9090",
        "prometheus.checkIntervalSeconds=30",
        "monitoring.scrapeAnnotations=false",
        "operator.podAnnotations.team=ml",
    )
    deployment = find(docs, "Deployment", f"{FULLNAME}-operator")
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"team": "ml"}
    operator = container(docs, "Deployment", f"{FULLNAME}-operator")
    assert {"name": "metrics", "containerPort": 9500, "protocol": "TCP"} in operator["ports"]
    env = env_of(operator)
    assert env["EDGELOOM_METRICS_PORT"]["value"] == "9500"
    assert env["EDGELOOM_PROMETHEUS_URL"]["value"] == "http://prometheus.monitoring.svc:9090"
    assert env["EDGELOOM_HEALTH_INTERVAL_SECONDS"]["value"] == "30"
    service = find(docs, "Service", f"{FULLNAME}-operator")
    assert {"name": "metrics", "port": 9500, "targetPort": "metrics", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]


def test_the_health_and_metrics_ports_must_differ(helm: Helm) -> None:
    proc = helm.template("operator.metricsPort=8080")
    assert proc.returncode != 0
    assert "operator.healthPort and operator.metricsPort must differ" in proc.stderr


def test_pod_and_service_monitors_scrape_the_metrics_ports(helm: Helm) -> None:
    docs = helm.render(
        *MONITORING_ON,
        "monitoring.podMonitor.interval=15s",
        "monitoring.podMonitor.labels.release=kps",
        "monitoring.serviceMonitor.labels.release=kps",
    )
    pod_monitor = find(docs, "PodMonitor", FULLNAME)
    assert pod_monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert pod_monitor["metadata"]["labels"]["release"] == "kps"
    spec = pod_monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    # Job pods (rendered by the operator) are labelled app.kubernetes.io/name=edgeloom.
    assert spec["selector"] == {
        "matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "In", "values": ["edgeloom"]}
        ]
    }
    assert spec["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    # The dashboards and alerts select `up` by these target labels.
    assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(spec["podTargetLabels"])
    operator_pod = find(docs, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]
    assert operator_pod["metadata"]["labels"]["app.kubernetes.io/name"] == "edgeloom"

    service_monitor = find(docs, "ServiceMonitor", f"{FULLNAME}-operator")
    assert service_monitor["metadata"]["labels"]["release"] == "kps"
    spec = service_monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    service = find(docs, "Service", f"{FULLNAME}-operator")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_name_override_keeps_the_operator_pod_monitored(helm: Helm) -> None:
    docs = helm.render("nameOverride=loom", *MONITORING_ON)
    (expression,) = find(docs, "PodMonitor", f"{RELEASE}-loom")["spec"]["selector"][
        "matchExpressions"
    ]
    assert expression["values"] == ["edgeloom", "loom"]
    rule = find(docs, "PrometheusRule", f"{RELEASE}-loom")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert 'up{app_kubernetes_io_name=~"edgeloom|loom"} == 0' in exprs


def test_prometheus_rule_is_a_rule_file_with_labelled_alerts(helm: Helm) -> None:
    docs = helm.render(*MONITORING_ON, "monitoring.prometheusRule.labels.release=kps")
    rule = find(docs, "PrometheusRule", FULLNAME)
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert set(rule["spec"]) == {"groups"}
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) == 4
    for alert in alerts:
        assert alert["alert"].startswith("Edgeloom")
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        assert {"summary", "description"} <= alert["annotations"].keys()
        assert "{{ $labels." in alert["annotations"]["summary"]  # Prometheus templates survive helm


def test_dashboards_are_config_maps_for_the_grafana_sidecar(default_docs: list[dict]) -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert len(files) == 3
    for path in files:
        config_map = find(default_docs, "ConfigMap", f"{FULLNAME}-dashboard-{path.stem}")
        assert config_map["metadata"]["namespace"] == NAMESPACE
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert "annotations" not in config_map["metadata"]
        assert config_map["data"].keys() == {path.name}
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())


def test_dashboard_values_move_and_label_the_config_maps(helm: Helm) -> None:
    docs = helm.render(
        "monitoring.dashboards.label=dashboards.grafana.com/load",
        "monitoring.dashboards.labelValue=yes",
        "monitoring.dashboards.namespace=monitoring",
        "monitoring.dashboards.annotations.grafana_folder=edgeloom",
    )
    config_map = find(docs, "ConfigMap", f"{FULLNAME}-dashboard-operator")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["dashboards.grafana.com/load"] == "yes"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "edgeloom"}

    docs = helm.render("monitoring.dashboards.enabled=false")
    assert not [d for d in docs if "-dashboard-" in d["metadata"]["name"]]
