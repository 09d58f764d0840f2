"""The chart's NATS certificate and the operator's Secret access, on the real control plane.

``helm template`` cannot show what ``lookup`` keeps, and only the API server's RBAC authorizer
says what a grant allows. So the chart is installed for real (no pod needs to run: nothing
waits for one), upgraded, and asked about:

- the generated CA and server certificate survive ``helm upgrade``; new names (more replicas)
  get a new certificate signed by the same CA;
- every object the chart renders passes the API server's validation (NetworkPolicy, RBAC with
  resourceNames, RoleBindings in the job namespaces);
- the operator's ServiceAccount may write Secrets in its job namespaces only, never list or
  watch them, and read only the authority Secret by name in the release namespace
  (``kubectl auth can-i --as``, the real authorizer).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from cryptography import x509

from edgeloom_testkit.controlplane import REPO_ROOT, ControlPlane

CHART = str(REPO_ROOT / "charts" / "edgeloom")
RELEASE = "secured"
FULLNAME = f"{RELEASE}-edgeloom"
SYSTEM = "secured-system"
JOBS = "secured-jobs"
OPERATOR = f"system:serviceaccount:{SYSTEM}:{FULLNAME}-operator"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    for namespace in (SYSTEM, JOBS):
        control_plane.kubectl("create", "namespace", namespace)
    control_plane.helm(
        "install", RELEASE, CHART, "-n", SYSTEM, "--set", f"rbac.jobNamespaces={{{JOBS}}}"
    )
    yield control_plane
    # No operator pod runs here, so the pre-delete hook (which waits for one) is skipped, as the
    # chart README says for an operator already gone.
    control_plane.helm("uninstall", RELEASE, "-n", SYSTEM, "--no-hooks", check=False, timeout=120)
    for namespace in (SYSTEM, JOBS):
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def secret(plane: ControlPlane, name: str) -> dict[str, bytes]:
    found = plane.kubectl_json("get", "secret", name, "-n", SYSTEM)
    return {k: base64.b64decode(v) for k, v in found["data"].items()}


def upgrade(plane: ControlPlane, *sets: str) -> None:
    args = [a for s in (f"rbac.jobNamespaces={{{JOBS}}}", *sets) for a in ("--set", s)]
    plane.helm("upgrade", RELEASE, CHART, "-n", SYSTEM, *args)


def dns_names(pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(sans.get_values_for_type(x509.DNSName))


def test_the_generated_ca_survives_upgrades_and_signs_new_names(installed: ControlPlane) -> None:
    ca, tls = secret(installed, f"{FULLNAME}-nats-ca"), secret(installed, f"{FULLNAME}-nats-tls")
    assert tls["ca.crt"] == ca["ca.crt"]

    upgrade(installed)
    assert secret(installed, f"{FULLNAME}-nats-ca") == ca
    assert secret(installed, f"{FULLNAME}-nats-tls") == tls  # same names: same certificate

    upgrade(installed, "nats.replicas=3")
    assert secret(installed, f"{FULLNAME}-nats-ca") == ca
    renewed = secret(installed, f"{FULLNAME}-nats-tls")
    assert renewed["ca.crt"] == ca["ca.crt"] and renewed["tls.crt"] != tls["tls.crt"]
    third = f"{FULLNAME}-nats-2.{FULLNAME}-nats-headless.{SYSTEM}.svc"
    assert third in dns_names(renewed["tls.crt"]) and third not in dns_names(tls["tls.crt"])
    authority = x509.load_pem_x509_certificate(ca["ca.crt"])
    x509.load_pem_x509_certificate(renewed["tls.crt"]).verify_directly_issued_by(authority)
    sts = installed.kubectl_json("get", "statefulset", f"{FULLNAME}-nats", "-n", SYSTEM)
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    meta = installed.kubectl_json("get", "secret", f"{FULLNAME}-nats-tls", "-n", SYSTEM)
    assert (
        annotations["checksum/tls-names"]
        == meta["metadata"]["annotations"]["edgeloom.io/names-sha256"]
    )  # the NATS pods restart with the new certificate


def test_the_rendered_objects_are_accepted_by_the_api_server(installed: ControlPlane) -> None:
    manifest = installed.helm("get", "manifest", RELEASE, "-n", SYSTEM).stdout
    for kind, name, namespace in [
        ("networkpolicy", f"{FULLNAME}-nats", SYSTEM),
        ("rolebinding", f"{FULLNAME}-operator-secrets", JOBS),
        ("role", f"{FULLNAME}-operator-authority", SYSTEM),
    ]:
        assert f"name: {name}" in manifest
        installed.kubectl("get", kind, name, "-n", namespace)


def can(plane: ControlPlane, verb: str, resource: str, namespace: str) -> bool:
    proc = plane.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, "--as", OPERATOR, check=False
    )
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stdout + proc.stderr
    return answer == "yes"


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("create", "secrets", JOBS, True),
        ("patch", "secrets/tiny-nats", JOBS, True),
        ("get", "secrets/tiny-nats", JOBS, True),
        ("delete", "secrets/tiny-nats", JOBS, True),
        ("list", "secrets", JOBS, False),
        ("watch", "secrets", JOBS, False),
        ("update", "secrets/tiny-nats", JOBS, False),
        ("create", "secrets", "default", False),
        ("get", "secrets/tiny-nats", "default", False),
        ("get", f"secrets/{FULLNAME}-nats-authority", SYSTEM, True),
        ("get", f"secrets/{FULLNAME}-nats-tls", SYSTEM, False),
        ("get", f"secrets/{FULLNAME}-nats-ca", SYSTEM, False),
        ("create", "secrets", SYSTEM, True),
        ("list", "secrets", SYSTEM, False),
        ("create", "configmaps", "default", True),  # the rest of its children, unchanged
    ],
)
def test_the_operator_may_touch_secrets_only_where_jobs_run(
    installed: ControlPlane, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    assert can(installed, verb, resource, namespace) is allowed


def test_an_opted_in_namespace_grants_secrets_there_only(installed: ControlPlane) -> None:
    """What NOTES.txt tells a namespace's admin to run, run."""
    installed.kubectl("create", "namespace", "secured-optin")
    try:
        assert not can(installed, "create", "secrets", "secured-optin")
        role = f"{FULLNAME}-operator-secrets"
        installed.kubectl(
            "create", "rolebinding", role, "-n", "secured-optin", f"--clusterrole={role}",
            f"--serviceaccount={SYSTEM}:{FULLNAME}-operator",
        )  # fmt: skip
        assert can(installed, "create", "secrets", "secured-optin")
        assert not can(installed, "list", "secrets", "secured-optin")
    finally:
        installed.kubectl("delete", "namespace", "secured-optin", "--wait=false", check=False)


def test_the_notes_send_jobs_to_the_job_namespaces(installed: ControlPlane) -> None:
    status = json.loads(installed.helm("status", RELEASE, "-n", SYSTEM, "-o", "json").stdout)
    notes = status["info"]["notes"]
    assert f"is bound: in {JOBS}." in notes
    assert f"kubectl apply --namespace {JOBS} -f examples/prunejob-tiny-llama.yaml" in notes
