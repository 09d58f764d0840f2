"""A nats-server as a cluster's would be: TLS only, operator-mode auth, its account key and CA
ready to hand to the chart as an external NATS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client

from edgeloom.local.nats_server import NatsServer, TlsFiles
from edgeloom.runtime.bus import NatsAccess
from edgeloom.runtime.natsauth import ADMIN, Authority
from edgeloom_testkit.controlplane import ControlPlane, generate_certificates

ACCOUNT_SECRET = "nats-account"
CA_SECRET = "nats-ca"


@dataclass
class SecureNats:
    """A running TLS + JWT nats-server, its authority, CA and an admin user's credentials."""

    server: NatsServer
    authority: Authority
    ca: Path
    admin_creds: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> NatsAccess:
        return NatsAccess(self.url, self.admin_creds, self.ca)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server's certificate against its CA."""
        return ssl.create_default_context(cafile=str(self.ca))

    async def connect(self) -> Client:
        """A nats-py client of the admin user, verifying the server."""
        return await nats.connect(
            self.url,
            user_credentials=str(self.admin_creds),
            tls=self.ssl_context(),
            allow_reconnect=False,
        )

    def create_secrets(self, plane: ControlPlane, namespace: str) -> list[str]:
        """The account key and the CA as Secrets in ``namespace``; the chart values that use
        them (``--set``)."""
        seed = self.authority.account_seed.decode()
        plane.kubectl(
            "create", "secret", "generic", ACCOUNT_SECRET, "-n", namespace,
            f"--from-literal=account.nk={seed}",
        )  # fmt: skip
        plane.kubectl(
            "create", "secret", "generic", CA_SECRET, "-n", namespace,
            f"--from-file=ca.crt={self.ca}",
        )  # fmt: skip
        return [
            f"nats.url={self.url}",
            f"nats.auth.existingSecret={ACCOUNT_SECRET}",
            f"nats.tls.caSecret={CA_SECRET}",
        ]


@contextmanager
def secure_nats(directory: Path) -> Iterator[SecureNats]:
    """Start one on a free loopback port; its certificate names 127.0.0.1 and localhost."""
    certs = generate_certificates(directory / "certs")
    authority = Authority.new()
    admin = directory / "admin.creds"
    admin.write_text(authority.issuer.creds("e2e-admin", ADMIN))
    tls = TlsFiles(certs.serving_cert, certs.serving_key)
    with NatsServer(authority=authority, tls=tls) as server:
        yield SecureNats(server, authority, certs.ca_cert, admin)
