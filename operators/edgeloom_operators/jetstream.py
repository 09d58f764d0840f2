"""The operator's NATS connection, and deleting what a job left in JetStream.

A job's coordinator may keep its state and checkpoints in the job's own buckets
(:mod:`edgeloom.api.jobstate`); a kind whose runs do (its plugin's ``cleanup``) deletes them
with the resource, through a finalizer whose retries are bounded so a NATS outage cannot block
a deletion for long.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from edgeloom.api.jobstate import job_buckets
from edgeloom.runtime.natsauth import ADMIN, Issuer
from edgeloom_operators.config import OperatorConfig


@dataclass
class OperatorCreds:
    """The operator's own admin user, minted from the account key into a private file that
    nats-py re-reads at every reconnect, and re-minted when a third of its lifetime is left
    (the server disconnects a user whose JWT expires)."""

    issuer: Issuer
    lifetime_s: float
    path: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="edgeloom-operator-")) / "user.creds"
    )

    def __post_init__(self) -> None:
        self.write()

    def write(self) -> None:
        creds = self.issuer.creds("edgeloom-operator", ADMIN, self.lifetime_s)
        partial = self.path.with_suffix(".new")
        partial.touch(mode=0o600)
        partial.write_text(creds)
        partial.replace(self.path)  # atomic: a reconnect never reads half a file

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lifetime_s / 3 * 2)
            self.write()


async def connect(config: OperatorConfig, creds: OperatorCreds | None) -> NATS:
    """Connect to the jobs' NATS server as the operator's admin user, verifying TLS against
    the configured CA; reconnect forever afterwards."""
    options: dict[str, Any] = {}
    if creds is not None:
        options["user_credentials"] = str(creds.path)
    if config.nats_ca is not None or config.nats_url.startswith("tls://"):
        options["tls"] = ssl.create_default_context(cadata=config.nats_ca)
    return await nats.connect(
        config.nats_url,
        name="edgeloom-operator",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        **options,
    )


async def delete_job_state(nc: NATS, namespace: str, kind: str, name: str) -> list[str]:
    """Delete the job's KV and object-store buckets (every run's state and checkpoint);
    returns the buckets that existed and were deleted."""
    js = nc.jetstream()
    buckets = job_buckets(namespace, kind, name)
    deleted = []
    for bucket, delete in (
        (buckets.state, js.delete_key_value),
        (buckets.checkpoints, js.delete_object_store),
    ):
        try:
            await delete(bucket)
        except NotFoundError:  # never created, or deleted already
            continue
        deleted.append(bucket)
    return deleted
