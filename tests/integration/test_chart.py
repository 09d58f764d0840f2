"""The Helm chart, linted and rendered by the real ``helm`` built by ``controlplane/build.sh``.

Rendered manifests are parsed and checked for what the operator and its users rely on: the kopf
command line, a hardened pod, NATS wiring through a Secret, least-privilege RBAC (Secrets only
where jobs may run), aggregated user roles, the NATS JetStream server (TLS only, its
certificate, the NetworkPolicy in front of it), ``helm test`` pods, monitoring (metrics port,
scrape annotations, PodMonitor, ServiceMonitor, PrometheusRule, Grafana dashboard ConfigMaps)
and the values schema. The rendered NATS configuration and certificate are also run: a real
nats-server started from them serves TLS only, and the ``helm test`` script passes against it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloom.runtime.bus import Bus, NatsAccess
from edgeloom.runtime.natsauth import ADMIN, Authority
from edgeloom_operators.credentials import authority_secret_data

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
    rules |= {("", r, v) for r in ("configmaps", "services") for v in CRUD}
    rules |= {("apps", "deployments", v) for v in CRUD}
    rules |= {("", "pods", v) for v in ("get", "list", "watch", "patch", "delete")}
    rules |= {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    return rules


CLUSTER_OPERATOR_RULES: set[Rule] = {
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
    *(("", "namespaces", v) for v in ("get", "list", "watch")),
}
SECRET_RULES: set[Rule] = {("", "secrets", v) for v in ("get", "create", "patch", "delete")}
SECRETS_ROLE = f"{FULLNAME}-operator-secrets"
AUTHORITY_ROLE = f"{FULLNAME}-operator-authority"
UNINSTALL = f"{FULLNAME}-uninstall"
UNINSTALL_RBAC = {
    (k, UNINSTALL) for k in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
}


def component(doc: dict[str, Any]) -> str | None:
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


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
        ("nats.replicas=3", "rbac.jobNamespaces={team-a}", "nats.monitor.service=true"),
        ("nats.tls.certManager.enabled=true", "nats.tls.certManager.issuerRef.name=ca"),
    ],
    ids=["defaults", "external-nats", "watch-namespaces", "monitoring", "cluster", "cert-manager"],
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
    # the NATS CA, and only it (never the server's key), at EDGELOOM_NATS_CA_FILE
    assert env_of(operator)["EDGELOOM_NATS_CA_FILE"]["value"] == "/etc/edgeloom/nats-ca/ca.crt"
    assert {
        "name": "nats-ca",
        "mountPath": "/etc/edgeloom/nats-ca",
        "readOnly": True,
    } in operator["volumeMounts"]
    assert {
        "name": "nats-ca",
        "secret": {
            "secretName": f"{FULLNAME}-nats-tls",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        },
    } in pod["volumes"]
    # alive while kopf runs; ready once NATS is reached, and /readyz says why not
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-ready"}
    assert {"name": "http-ready", "containerPort": 8081, "protocol": "TCP"} in operator["ports"]
    env = env_of(operator)
    assert env["EDGELOOM_READINESS_PORT"]["value"] == "8081"
    assert env["EDGELOOM_OPERATOR_POD_UID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.uid"}
    }
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
    assert env["EDGELOOM_NATS_URL"]["value"] == f"tls://{FULLNAME}-nats.{NAMESPACE}.svc:4222"
    # the account key is read through the API (the operator creates it for the chart's NATS)
    assert env["EDGELOOM_NATS_AUTHORITY_SECRET"]["value"] == f"{FULLNAME}-nats-authority"
    assert env["EDGELOOM_NATS_AUTHORITY_NAMESPACE"]["value"] == NAMESPACE
    assert env["EDGELOOM_NATS_AUTHORITY_CREATE"]["value"] == "true"
    assert env["EDGELOOM_NATS_CREDENTIAL_LIFETIME_SECONDS"]["value"] == "2592000"
    assert not [e for e in env if "PASSWORD" in e or "USER" in e]
    assert env["EDGELOOM_SERVICES_IMAGE"]["value"] == "ghcr.io/edgeloom/edgeloom-services:v9"
    assert env["EDGELOOM_SERVICES_IMAGE_PULL_POLICY"]["value"] == "Always"
    assert env["EDGELOOM_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert operator["env"][-1] == {"name": "EDGELOOM_LOG_LEVEL", "value": "debug"}
    assert ("Secret", f"{FULLNAME}-nats-authority") not in kinds(docs)  # not Helm's to render


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
    # besides the authority Secret's Role in the release namespace, no Role and no binding:
    # watching every namespace, the operator may write Secrets nowhere until a namespace
    # binds the Secret ClusterRole (it is rendered, but unbound)
    assert {(d["kind"], d["metadata"]["name"]) for d in default_docs if "Role" in d["kind"]} == {
        ("ClusterRole", f"{FULLNAME}-operator"),
        ("ClusterRoleBinding", f"{FULLNAME}-operator"),
        ("ClusterRole", SECRETS_ROLE),
        ("Role", AUTHORITY_ROLE),
        ("RoleBinding", AUTHORITY_ROLE),
        ("Role", f"{FULLNAME}-operator-events"),  # events on its own Pod
        ("RoleBinding", f"{FULLNAME}-operator-events"),
        ("ClusterRole", f"{FULLNAME}-edit"),
        ("ClusterRole", f"{FULLNAME}-view"),
        *UNINSTALL_RBAC,  # pre-delete hooks: they exist only while `helm uninstall` runs
    }
    assert flat_rules(find(default_docs, "ClusterRole", SECRETS_ROLE)["rules"]) == SECRET_RULES
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
    scale = {("edgeloom.io", f"{p}/scale", v) for p in plurals for v in ("get", "patch", "update")}
    assert (
        flat_rules(edit["rules"]) == {("edgeloom.io", p, v) for p in plurals for v in verbs} | scale
    )

    view = find(default_docs, "ClusterRole", f"{FULLNAME}-view")
    labels = view["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in labels
    assert flat_rules(view["rules"]) == {
        ("edgeloom.io", r, v)
        for p in plurals
        for r in (p, f"{p}/status", f"{p}/scale")
        for v in ("get", "list", "watch")
    }


def test_watch_namespaces_use_roles_in_each_namespace(helm: Helm) -> None:
    docs = helm.render("operator.watchNamespaces={team-a,team-b}")
    operator = container(docs, "Deployment", f"{FULLNAME}-operator")
    expected = [a for a in KOPF_COMMAND if a != "--all-namespaces"]
    expected[3:3] = ["--namespace=team-a", "--namespace=team-b"]
    assert operator["command"] == expected

    namespaced = namespaced_operator_rules(crd_plurals())
    docs = [d for d in docs if component(d) == "operator"]
    for ns in ("team-a", "team-b"):
        role = next(d for d in docs if d["kind"] == "Role" and d["metadata"].get("namespace") == ns)
        assert flat_rules(role["rules"]) == namespaced
        bindings = {
            d["roleRef"]["kind"]: d
            for d in docs
            if d["kind"] == "RoleBinding" and d["metadata"].get("namespace") == ns
        }
        assert bindings["Role"]["roleRef"]["name"] == role["metadata"]["name"]
        assert bindings["Role"]["subjects"][0]["namespace"] == NAMESPACE
        # and the Secret rules, in the watched namespaces only
        assert bindings["ClusterRole"]["roleRef"]["name"] == SECRETS_ROLE
        assert bindings["ClusterRole"]["subjects"] == [
            {"kind": "ServiceAccount", "name": f"{FULLNAME}-operator", "namespace": NAMESPACE}
        ]
    watched = [d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] != NAMESPACE]
    assert len(watched) == 2
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
    assert not [e for e in env_of(nats) if "PASSWORD" in e or "USER" in e]
    (auth,) = [v for v in pod["volumes"] if v["name"] == "nats-auth"]
    assert auth["secret"] == {  # only the public JWTs, never the account key
        "secretName": f"{FULLNAME}-nats-authority",
        "items": [{"key": "auth.conf", "path": "auth.conf"}],
    }
    assert {"name": "nats-auth", "mountPath": "/etc/nats-auth", "readOnly": True} in nats[
        "volumeMounts"
    ]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]
    assert {"name": "data", "mountPath": "/data"} in nats["volumeMounts"]

    conf = find(default_docs, "ConfigMap", f"{FULLNAME}-nats-config")["data"]["nats.conf"]
    assert re.search(r"jetstream \{\s*store_dir: /data", conf)
    assert re.search(r"^max_payload: 8MB$", conf, re.MULTILINE)
    assert re.search(
        r"^tls \{\s*cert_file: /etc/nats-tls/tls.crt\s*key_file: /etc/nats-tls/tls.key",
        conf,
        re.MULTILINE,
    )
    # clients verify the server; the server asks for no client certificate
    assert not re.search(r"^\s*verify:", conf, re.MULTILINE)
    assert re.search(r"^include \.\./nats-auth/auth\.conf$", conf, re.MULTILINE)
    assert "authorization" not in conf
    assert "cluster {" not in conf

    client = find(default_docs, "Service", f"{FULLNAME}-nats")
    assert client["spec"]["type"] == "ClusterIP"
    assert client["spec"]["ports"] == [
        {"name": "nats", "port": 4222, "targetPort": "nats", "protocol": "TCP"}
    ]  # the monitor port is not on the Service
    headless = find(default_docs, "Service", f"{FULLNAME}-nats-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert "monitor" not in {p["name"] for p in headless["spec"]["ports"]}
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
    proc = helm.template(f"nats.url={url}")
    assert proc.returncode != 0 and "nats.auth.existingSecret" in proc.stderr
    docs = helm.render(f"nats.url={url}", "nats.auth.existingSecret=nats-account")
    names = kinds(docs)
    chart_nats = {n for n in names if n[1].startswith(f"{FULLNAME}-nats")}
    assert chart_nats == set(), chart_nats
    assert ("Pod", f"{FULLNAME}-test-nats") not in names
    env = env_of(container(docs, "Deployment", f"{FULLNAME}-operator"))
    assert env["EDGELOOM_NATS_URL"]["value"] == url
    assert env["EDGELOOM_NATS_AUTHORITY_SECRET"]["value"] == "nats-account"
    assert env["EDGELOOM_NATS_AUTHORITY_CREATE"]["value"] == "false"
    assert not [d for d in docs if d["kind"] == "Secret"]
    role = find(docs, "Role", f"{FULLNAME}-operator-authority")
    assert role["rules"] == [  # read the given Secret by name; create nothing
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["nats-account"],
            "verbs": ["get"],
        }
    ]


def test_an_existing_authority_replaces_the_one_the_operator_would_create(helm: Helm) -> None:
    docs = helm.render("nats.auth.existingSecret=nats-account")
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert secrets == {f"{FULLNAME}-nats-ca", f"{FULLNAME}-nats-tls"}  # TLS only, no credentials
    pod = find(docs, "StatefulSet", f"{FULLNAME}-nats")["spec"]["template"]["spec"]
    (auth,) = [v for v in pod["volumes"] if v["name"] == "nats-auth"]
    assert auth["secret"]["secretName"] == "nats-account"
    env = env_of(container(docs, "Deployment", f"{FULLNAME}-operator"))
    assert env["EDGELOOM_NATS_AUTHORITY_SECRET"]["value"] == "nats-account"
    assert env["EDGELOOM_NATS_AUTHORITY_CREATE"]["value"] == "false"


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
    assert f"{FULLNAME}-nats-0.{FULLNAME}-nats-headless.{NAMESPACE}.svc" in script  # monitor
    assert ":8222/healthz" in script and "CONNECT" in script
    assert "/etc/edgeloom/nats-ca/ca.crt" in script and "wrap_socket" in script
    assert {"name": "nats-ca", "mountPath": "/etc/edgeloom/nats-ca", "readOnly": True} in check[
        "volumeMounts"
    ]
    assert "env" not in check  # it holds no credentials: it proves a client without is refused


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
        (("rbac.jobNamespaces={Team_A}",), "jobNamespaces"),
        (("rbac.clusterWide=true",), "clusterWide"),
        (("nats.tls.validityDays=0",), "validityDays"),
        (("nats.tls.extraDnsNames={nats_edge}",), "extraDnsNames"),
        (("nats.tls.extraIpAddresses={nats.edge}",), "extraIpAddresses"),
        (("nats.tls.certManager.issuerRef.kind=Vault",), "kind"),
        (("nats.tls.certManager.duration=90d",), "duration"),
        (("nats.monitor.port=8222",), "port"),
        (("nats.networkPolicy.monitorFrom[0].pods.app=x",), "pods"),
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
        "job-namespace",
        "unknown-rbac-key",
        "zero-validity",
        "dns-name",
        "ip-address",
        "issuer-kind",
        "cert-manager-duration",
        "monitor-port-is-fixed",
        "network-policy-peer",
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


def test_uninstall_runs_a_least_privilege_pre_delete_hook_that_deletes_and_waits(
    helm: Helm,
) -> None:
    docs = helm.render("operator.uninstallHook.timeoutSeconds=100")
    hooks = [d for d in docs if component(d) == "uninstall"]
    assert {(d["kind"], d["metadata"]["name"]) for d in hooks} == {
        ("ServiceAccount", UNINSTALL),
        ("Job", UNINSTALL),
        *UNINSTALL_RBAC,
    }
    for doc in hooks:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        # the ServiceAccount and its rights exist before the Job runs
        assert annotations["helm.sh/hook-weight"] == ("0" if doc["kind"] == "Job" else "-10")
    job = find(hooks, "Job", UNINSTALL)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 160
    assert pod["serviceAccountName"] == UNINSTALL and pod["securityContext"]["runAsNonRoot"]
    (hook,) = pod["containers"]
    assert hook["image"] == "ghcr.io/edgeloom/edgeloom-operator:0.1.0"
    assert hook["command"] == [
        "python",
        "-m",
        "edgeloom_operators.uninstall",
        f"--operator={NAMESPACE}/{FULLNAME}-operator",
        "--timeout=100",
    ]
    plurals = crd_plurals()
    cluster = find(hooks, "ClusterRole", UNINSTALL)
    assert flat_rules(cluster["rules"]) == {
        ("edgeloom.io", p, v) for p in plurals for v in ("get", "list", "delete")
    }
    (deployment,) = find(hooks, "Role", UNINSTALL)["rules"]
    assert deployment == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": [f"{FULLNAME}-operator"],
        "verbs": ["get"],
    }
    # watching namespaces: the rights and the deletions in those only
    watched = helm.render("operator.watchNamespaces={team-a,team-b}")
    hooks = [d for d in watched if component(d) == "uninstall"]
    assert "ClusterRole" not in {d["kind"] for d in hooks}
    roles = {d["metadata"]["namespace"] for d in hooks if d["kind"] == "Role"}
    assert roles == {"team-a", "team-b", NAMESPACE}
    (hook,) = find(hooks, "Job", UNINSTALL)["spec"]["template"]["spec"]["containers"]
    assert hook["command"][-2:] == ["--namespace=team-a", "--namespace=team-b"]
    assert not [
        d
        for d in helm.render("operator.uninstallHook.enabled=false")
        if component(d) == "uninstall"
    ]


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
    # a job pod's edgeloom.io/* labels (kind, job, role, run) become edgeloom_* target labels
    labelmap = {
        "action": "labelmap",
        "regex": "__meta_kubernetes_pod_label_edgeloom_io_(.+)",
        "replacement": "edgeloom_$1",
    }
    assert spec["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "relabelings": [labelmap]}
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
    assert len(alerts) == 6
    for alert in alerts:
        assert alert["alert"].startswith("Edgeloom")
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url", "dashboard_url"} <= annotations.keys()
        if alert["alert"] != "EdgeloomOperatorAbsent":  # absent() has no labels to show
            assert "{{ $labels." in annotations["summary"]  # Prometheus templates survive helm


def test_dashboards_are_config_maps_for_the_grafana_sidecar(default_docs: list[dict]) -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert len(files) == 4  # one per kind, and the operator's
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


# -- NATS: TLS, the monitor port, the NetworkPolicy ---------------------------------------------


def secret_bytes(docs: Iterable[dict[str, Any]], name: str) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in find(docs, "Secret", name)["data"].items()}


def nats_names(replicas: int, namespace: str = NAMESPACE) -> set[str]:
    """The names a client or a route peer may dial the chart's NATS by."""
    service, headless = f"{FULLNAME}-nats", f"{FULLNAME}-nats-headless"
    names = {service, f"{service}.{namespace}"}
    for short in (f"{service}.{namespace}.svc", f"{headless}.{namespace}.svc"):
        names |= {short, f"{short}.cluster.local"}
    for i in range(replicas):
        pod = f"{service}-{i}.{headless}.{namespace}.svc"
        names |= {pod, f"{pod}.cluster.local"}
    return names


def test_the_generated_certificate_names_every_way_to_reach_nats(helm: Helm) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    docs = helm.render(
        "nats.replicas=3",
        "nats.tls.extraDnsNames={nats.edge.example}",
        "nats.tls.extraIpAddresses={192.0.2.7}",
    )
    tls = find(docs, "Secret", f"{FULLNAME}-nats-tls")
    assert tls["type"] == "kubernetes.io/tls"
    server, ca = (
        secret_bytes(docs, f"{FULLNAME}-nats-tls"),
        secret_bytes(docs, f"{FULLNAME}-nats-ca"),
    )
    assert set(server) == {"tls.crt", "tls.key", "ca.crt"} and set(ca) == {"ca.crt", "ca.key"}
    assert server["ca.crt"] == ca["ca.crt"]

    cert = x509.load_pem_x509_certificate(server["tls.crt"])
    authority = x509.load_pem_x509_certificate(ca["ca.crt"])
    cert.verify_directly_issued_by(authority)
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == nats_names(3) | {"nats.edge.example"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages
    key = serialization.load_pem_private_key(server["tls.key"], password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]

    # routes dial peers by the names in the certificate (mutual TLS with its CA)
    conf = find(docs, "ConfigMap", f"{FULLNAME}-nats-config")["data"]["nats.conf"]
    cluster = conf[conf.index("cluster {") :]
    assert re.search(
        r"tls \{\s*cert_file: /etc/nats-tls/tls.crt\s*key_file: \S+\s*"
        r"ca_file: /etc/nats-tls/ca.crt",
        cluster,
    )
    assert set(re.findall(r"nats://(\S+):6222", cluster)) <= nats_names(3)
    assert "advertise: $CLUSTER_ADVERTISE" in cluster and "no_advertise: true" in cluster
    nats = container(docs, "StatefulSet", f"{FULLNAME}-nats")
    advertised = env_of(nats)["CLUSTER_ADVERTISE"]["value"]
    assert advertised == f"$(SERVER_NAME).{FULLNAME}-nats-headless.{NAMESPACE}.svc:6222"
    assert advertised.replace("$(SERVER_NAME)", f"{FULLNAME}-nats-2").split(":")[0] in nats_names(3)
    pod = find(docs, "StatefulSet", f"{FULLNAME}-nats")["spec"]["template"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == f"{FULLNAME}-nats-tls"
    assert [i["key"] for i in volume["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    assert {"name": "tls", "mountPath": "/etc/nats-tls", "readOnly": True} in nats["volumeMounts"]
    digest = tls["metadata"]["annotations"]["edgeloom.io/names-sha256"]
    assert pod["metadata"]["annotations"]["checksum/tls-names"] == digest


def test_the_certificate_digest_follows_the_names_only(helm: Helm) -> None:
    def digest(*sets: str) -> str:
        tls = find(helm.render(*sets), "Secret", f"{FULLNAME}-nats-tls")
        return str(tls["metadata"]["annotations"]["edgeloom.io/names-sha256"])

    assert digest() == digest("nats.maxPayload=16MB")  # a new render, the same names
    assert digest() != digest("nats.replicas=3")
    assert digest() != digest("nats.tls.extraDnsNames={nats.edge.example}")


def test_an_existing_tls_secret_replaces_the_generated_certificate(helm: Helm) -> None:
    docs = helm.render("nats.tls.existingSecret=nats-cert")
    assert not [d for d in docs if d["kind"] in ("Certificate",)]
    assert not [d for d in docs if d["kind"] == "Secret"]
    pod = find(docs, "StatefulSet", f"{FULLNAME}-nats")["spec"]["template"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "nats-cert"
    assert "checksum/tls-names" not in pod["metadata"]["annotations"]
    operator = find(docs, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    (ca,) = [v for v in operator["volumes"] if v["name"] == "nats-ca"]
    assert ca["secret"]["secretName"] == "nats-cert"


def test_cert_manager_issues_the_certificate_for_the_same_names(helm: Helm) -> None:
    docs = helm.render(
        "nats.tls.certManager.enabled=true",
        "nats.tls.certManager.issuerRef.name=edge-ca",
        "nats.tls.certManager.issuerRef.kind=ClusterIssuer",
        "nats.tls.extraIpAddresses={192.0.2.7}",
    )
    certificate = find(docs, "Certificate", f"{FULLNAME}-nats")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    spec = certificate["spec"]
    assert spec["secretName"] == f"{FULLNAME}-nats-tls"
    assert set(spec["dnsNames"]) == nats_names(1) and spec["ipAddresses"] == ["192.0.2.7"]
    assert {"server auth", "client auth"} <= set(spec["usages"])
    assert spec["issuerRef"] == {
        "name": "edge-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert (spec["duration"], spec["renewBefore"]) == ("2160h", "360h")
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    assert not [d for d in docs if d["kind"] == "Secret" and "-nats-tls" in d["metadata"]["name"]]
    assert not [d for d in docs if d["kind"] == "Secret" and "-nats-ca" in d["metadata"]["name"]]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("nats.tls.existingSecret=cert", "nats.tls.certManager.enabled=true"),
            "nats.tls.existingSecret and nats.tls.certManager.enabled exclude each other",
        ),
        (
            ("nats.tls.certManager.enabled=true",),
            "nats.tls.certManager.enabled needs nats.tls.certManager.issuerRef.name",
        ),
    ],
    ids=["secret-and-cert-manager", "cert-manager-without-issuer"],
)
def test_contradictory_tls_values_fail_with_a_message(
    helm: Helm, sets: tuple[str, ...], message: str
) -> None:
    proc = helm.template(*sets)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_an_external_nats_is_verified_with_the_named_ca_or_the_trust_store(helm: Helm) -> None:
    url = "tls://nats.example:4222"
    account = "nats.auth.existingSecret=nats-account"
    docs = helm.render(f"nats.url={url}", "nats.tls.caSecret=nats-example-ca", account)
    operator = find(docs, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    (ca,) = [v for v in operator["volumes"] if v["name"] == "nats-ca"]
    assert ca["secret"] == {
        "secretName": "nats-example-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    env = env_of(operator["containers"][0])
    assert env["EDGELOOM_NATS_URL"]["value"] == url
    assert env["EDGELOOM_NATS_CA_FILE"]["value"] == "/etc/edgeloom/nats-ca/ca.crt"
    assert not [d for d in docs if d["kind"] in ("Secret", "NetworkPolicy", "Certificate")]

    docs = helm.render(f"nats.url={url}", account)
    operator = find(docs, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    assert "nats-ca" not in {v["name"] for v in operator["volumes"]}
    assert "EDGELOOM_NATS_CA_FILE" not in env_of(operator["containers"][0])


def test_the_monitor_port_joins_the_services_only_when_asked(helm: Helm) -> None:
    docs = helm.render("nats.monitor.service=true", "nats.replicas=3")
    for name in (f"{FULLNAME}-nats", f"{FULLNAME}-nats-headless"):
        ports = find(docs, "Service", name)["spec"]["ports"]
        assert {
            "name": "monitor",
            "port": 8222,
            "targetPort": "monitor",
            "protocol": "TCP",
        } in ports
    nats = container(docs, "StatefulSet", f"{FULLNAME}-nats")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert nats[probe]["httpGet"]["port"] == "monitor"  # the container port, either way


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector with matchLabels only selects ``labels``."""
    assert set(selector) <= {"matchLabels"}, selector
    return dict(selector.get("matchLabels") or {}).items() <= labels.items()


def test_the_network_policy_admits_edgeloom_pods_the_operator_and_helm_test(
    default_docs: list[dict],
) -> None:
    from edgeloom.api.kinds.prunejob import KIND as PRUNEJOB
    from edgeloom_operators.render import labels as job_pod_labels

    policy = find(default_docs, "NetworkPolicy", f"{FULLNAME}-nats")
    spec = policy["spec"]
    nats_pod = find(default_docs, "StatefulSet", f"{FULLNAME}-nats")["spec"]["template"]
    assert selects(spec["podSelector"], nats_pod["metadata"]["labels"])
    assert spec["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in spec["ingress"]}
    assert set(by_port) == {"nats", "monitor"}  # no routes with one replica
    assert {p["name"] for p in nats_pod["spec"]["containers"][0]["ports"]} >= set(by_port)

    def admitted(port: str, labels: dict[str, str], same_namespace: bool) -> bool:
        for peer in by_port[port]:
            in_namespace = "namespaceSelector" in peer or same_namespace
            if in_namespace and selects(peer.get("podSelector", {}), labels):
                return True
        return False

    job_pod = job_pod_labels(PRUNEJOB, "tiny", "pruner")  # what the operator renders
    operator = find(default_docs, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]
    test_pod = find(default_docs, "Pod", f"{FULLNAME}-test-nats")
    assert admitted("nats", job_pod, same_namespace=False)
    assert admitted("nats", operator["metadata"]["labels"], same_namespace=True)
    assert admitted("nats", test_pod["metadata"]["labels"], same_namespace=True)
    assert not admitted("nats", operator["metadata"]["labels"], same_namespace=False)
    assert not admitted("nats", {"app.kubernetes.io/name": "edgeloom"}, same_namespace=False)
    assert admitted("monitor", test_pod["metadata"]["labels"], same_namespace=True)
    assert not admitted("monitor", job_pod, same_namespace=False)
    assert not admitted("monitor", operator["metadata"]["labels"], same_namespace=True)


def test_network_policy_values_add_routes_monitoring_and_clients(helm: Helm) -> None:
    docs = helm.render(
        "nats.replicas=3",
        "nats.networkPolicy.monitorFrom[0].namespaceSelector.matchLabels.team=monitoring",
        "nats.networkPolicy.extraClientFrom[0].ipBlock.cidr=192.0.2.0/24",
    )
    spec = find(docs, "NetworkPolicy", f"{FULLNAME}-nats")["spec"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in spec["ingress"]}
    nats_pod = find(docs, "StatefulSet", f"{FULLNAME}-nats")["spec"]["template"]
    (route_peer,) = by_port["cluster"]
    assert set(route_peer) == {"podSelector"}
    assert selects(route_peer["podSelector"], nats_pod["metadata"]["labels"])
    assert {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}} in by_port["monitor"]
    assert {"ipBlock": {"cidr": "192.0.2.0/24"}} in by_port["nats"]

    docs = helm.render("nats.networkPolicy.enabled=false")
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]


# -- the operator's Secrets --------------------------------------------------------------------


def secret_bindings(docs: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, namespace) of every binding of the Secret ClusterRole to the operator."""
    out = set()
    for doc in docs:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding") and doc["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": SECRETS_ROLE,
        }:
            assert doc["subjects"] == [
                {"kind": "ServiceAccount", "name": f"{FULLNAME}-operator", "namespace": NAMESPACE}
            ]
            out.add((doc["kind"], doc["metadata"].get("namespace", "")))
    return out


def secret_verbs(docs: Iterable[dict[str, Any]]) -> set[str]:
    """Every verb on Secrets that any Role or ClusterRole of the chart grants."""
    verbs = set()
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                if "" in rule["apiGroups"] and "secrets" in rule["resources"]:
                    verbs |= set(rule["verbs"])
    return verbs


@pytest.mark.parametrize(
    ("sets", "bindings"),
    [
        ((), set()),
        (
            ("rbac.jobNamespaces={ml,research}",),
            {("RoleBinding", "ml"), ("RoleBinding", "research")},
        ),
        (("operator.watchNamespaces={ml}",), {("RoleBinding", "ml")}),
        (
            ("operator.watchNamespaces={ml,research}", "rbac.jobNamespaces={research}"),
            {("RoleBinding", "research")},
        ),
        (("rbac.clusterWideSecrets=true",), {("ClusterRoleBinding", "")}),
    ],
    ids=["none-by-default", "job-namespaces", "watched", "job-subset-of-watched", "cluster-wide"],
)
def test_secrets_are_granted_only_where_jobs_may_run(
    helm: Helm, sets: tuple[str, ...], bindings: set[tuple[str, str]]
) -> None:
    docs = helm.render(*sets)
    assert secret_bindings(docs) == bindings
    assert flat_rules(find(docs, "ClusterRole", SECRETS_ROLE)["rules"]) == SECRET_RULES
    # nothing anywhere lists or watches Secrets (the operator would enumerate them)
    assert secret_verbs(docs) == {"get", "create", "patch", "delete"}
    operator_role = find(docs, "ClusterRole", f"{FULLNAME}-operator")
    assert "secrets" not in set(strings(operator_role["rules"]))


def test_the_authority_secret_is_readable_by_name_only(default_docs: list[dict]) -> None:
    role = find(default_docs, "Role", AUTHORITY_ROLE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{FULLNAME}-nats-authority"],
            "verbs": ["get"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    binding = find(default_docs, "RoleBinding", AUTHORITY_ROLE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": AUTHORITY_ROLE,
    }


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("rbac.clusterWideSecrets=true", "rbac.jobNamespaces={ml}"),
            "rbac.clusterWideSecrets needs operator.watchNamespaces and rbac.jobNamespaces empty",
        ),
        (
            ("rbac.clusterWideSecrets=true", "operator.watchNamespaces={ml}"),
            "rbac.clusterWideSecrets needs operator.watchNamespaces and rbac.jobNamespaces empty",
        ),
        (
            ("operator.watchNamespaces={ml}", "rbac.jobNamespaces={research}"),
            "rbac.jobNamespaces lists research, which operator.watchNamespaces does not watch",
        ),
    ],
    ids=["cluster-wide-and-list", "cluster-wide-and-watch", "job-namespace-not-watched"],
)
def test_contradictory_rbac_values_fail_with_a_message(
    helm: Helm, sets: tuple[str, ...], message: str
) -> None:
    proc = helm.template(*sets)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# -- the rendered NATS, run ---------------------------------------------------------------------

AUTHORITY = Authority.new()
RUNTIME_SECRETS: dict[str, Callable[[], dict[str, bytes]]] = {
    # the operator creates it on first start (edgeloom_operators.credentials.load_issuer)
    f"{FULLNAME}-nats-authority": lambda: {
        k: v.encode() for k, v in authority_secret_data(AUTHORITY).items()
    },
}
"""Secrets the chart's pods use that no template renders (something makes them at run time),
by name: how this test makes each one's data."""


class Materialized:
    """One container of a rendered pod, laid out on this machine as a kubelet would: its
    volumes written under a folder, its environment resolved from the rendered Secrets and
    ConfigMaps, and its mount paths mapped to local folders."""

    def __init__(
        self, docs: list[dict[str, Any]], pod: dict[str, Any], pod_name: str, root: Path
    ) -> None:
        self.docs = docs
        spec = pod["spec"]
        (self.container,) = spec["containers"]
        local: dict[str, Path] = {}
        for volume in spec.get("volumes", []):
            local[volume["name"]] = self._write_volume(volume, root / volume["name"])
        mounts = {}
        for mount in self.container.get("volumeMounts", []):
            if mount["name"] not in local:  # a volumeClaimTemplate: an empty folder
                local[mount["name"]] = root / mount["name"]
                local[mount["name"]].mkdir(parents=True)
            mounts[mount["mountPath"]] = local[mount["name"]]
        self.mounts = dict(sorted(mounts.items(), key=lambda m: -len(m[0])))
        self.env: dict[str, str] = {}
        for var in self.container.get("env", []):
            self.env[var["name"]] = self._value(var, pod_name)

    def data(self, kind: str, name: str) -> dict[str, bytes]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        if found and kind == "Secret":
            return {k: base64.b64decode(v) for k, v in found[0].get("data", {}).items()}
        if found:
            return {k: v.encode() for k, v in found[0].get("data", {}).items()}
        if kind == "Secret" and name in RUNTIME_SECRETS:
            return RUNTIME_SECRETS[name]()
        pytest.fail(f"{kind} {name} is not rendered by the chart (nor in RUNTIME_SECRETS)")

    def _write_volume(self, volume: dict[str, Any], dest: Path) -> Path:
        dest.mkdir(parents=True)
        for kind, key in (("configMap", "name"), ("secret", "secretName")):
            if kind in volume:
                source = volume[kind]
                data = self.data("ConfigMap" if kind == "configMap" else "Secret", source[key])
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (dest / item["path"]).write_bytes(data[item["key"]])
        return dest

    def _value(self, var: dict[str, Any], pod_name: str) -> str:
        if "value" in var:
            return re.sub(r"\$\((\w+)\)", lambda m: self.env.get(m[1], m[0]), var["value"])
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.data("Secret", ref["name"])[ref["key"]].decode()
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.data("ConfigMap", ref["name"])[ref["key"]].decode()
        assert source["fieldRef"]["fieldPath"] == "metadata.name", source
        return pod_name

    def local(self, text: str) -> str:
        """``text`` with every mount path replaced by its local folder."""
        for mount, path in self.mounts.items():
            text = text.replace(mount, str(path))
        return text


@dataclass
class RenderedNats:
    """nats-server started from the chart's rendered ConfigMap, Secrets and pod spec."""

    docs: list[dict[str, Any]]
    client_port: int
    monitor_port: int
    process: subprocess.Popen[bytes]


def start_rendered_nats(docs: list[dict[str, Any]], root: Path, test: bool = False) -> Any:
    from edgeloom.local.nats_server import nats_server_binary
    from edgeloom_testkit.controlplane import free_port

    sts = find(docs, "StatefulSet", f"{FULLNAME}-nats")
    pod = Materialized(docs, sts["spec"]["template"], f"{FULLNAME}-nats-0", root)
    client, monitor = free_port(), free_port()
    conf_dir = pod.mounts["/etc/nats-config"]
    conf = pod.local((conf_dir / "nats.conf").read_text())
    conf = re.sub(r"^port: 4222$", f"port: {client}", conf, flags=re.MULTILINE)
    conf = re.sub(r"^http_port: 8222$", f"http_port: {monitor}", conf, flags=re.MULTILINE)
    (conf_dir / "nats.conf").write_text(conf)
    argv = [
        nats_server_binary(),
        "--config",
        str(conf_dir / "nats.conf"),
        *(["-t"] if test else []),
    ]
    env = {**os.environ, **pod.env}
    if test:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    log = (root / "nats.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", monitor), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"nats-server did not start: {(root / 'nats.log').read_text()}")
            time.sleep(0.1)
    return RenderedNats(docs, client, monitor, process)


def run_helm_test_script(
    nats: RenderedNats, root: Path, ca_override: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``helm test`` pod's script as rendered, its DNS names dialled to the local server."""
    test_pod = find(nats.docs, "Pod", f"{FULLNAME}-test-nats")
    pod = Materialized(nats.docs, test_pod, f"{FULLNAME}-test-nats", root)
    if ca_override is not None:
        (pod.mounts["/etc/edgeloom/nats-ca"] / "ca.crt").write_bytes(ca_override)
    dial = {
        (f"{FULLNAME}-nats.{NAMESPACE}.svc", 4222): ("127.0.0.1", nats.client_port),
        (f"{FULLNAME}-nats-0.{FULLNAME}-nats-headless.{NAMESPACE}.svc", 8222): (
            "127.0.0.1",
            nats.monitor_port,
        ),
    }
    prelude = (
        "import socket\n"
        f"_dial, _connect = {dial!r}, socket.create_connection\n"
        "socket.create_connection = lambda address, *a, **k: _connect("
        "_dial.get(tuple(address), address), *a, **k)\n"
    )
    (script,) = [a for a in test_pod["spec"]["containers"][0]["command"] if "CONNECT" in a]
    return subprocess.run(
        [sys.executable, "-c", prelude + pod.local(script)],
        env={**os.environ, **pod.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_rendered_nats_serves_tls_only_and_passes_its_helm_test(
    helm: Helm, tmp_path: Path
) -> None:
    # localhost among the certificate's names: this machine dials the server by it
    nats = start_rendered_nats(helm.render("nats.tls.extraDnsNames={localhost}"), tmp_path / "nats")
    try:
        passed = run_helm_test_script(nats, tmp_path / "test")
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "verified for" in passed.stdout
        assert "a client without credentials is refused" in passed.stdout

        # a user the operator mints from the authority gets in, over TLS verified with the CA
        ca = tmp_path / "ca.crt"
        ca.write_bytes(secret_bytes(nats.docs, f"{FULLNAME}-nats-tls")["ca.crt"])
        creds = tmp_path / "operator.creds"
        creds.write_text(AUTHORITY.issuer.creds("edgeloom-operator", ADMIN))

        async def publish() -> None:
            access = NatsAccess(f"tls://localhost:{nats.client_port}", creds, ca)
            bus = await Bus.connect(access, "chart-test", connect_deadline_s=10)
            await bus.publish("edgeloom.ns.prunejob.p.status", "{}")
            await bus.drain()

        asyncio.run(publish())

        # the verification is real: a CA from another install does not verify this server
        other = secret_bytes(helm.render(), f"{FULLNAME}-nats-ca")["ca.crt"]
        refused = run_helm_test_script(nats, tmp_path / "other-ca", ca_override=other)
        assert refused.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    finally:
        nats.process.kill()
        nats.process.wait(10)


def test_the_rendered_cluster_configuration_loads(helm: Helm, tmp_path: Path) -> None:
    proc = start_rendered_nats(helm.render("nats.replicas=3"), tmp_path, test=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
