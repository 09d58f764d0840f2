"""The operator's NATS connection, and deleting what a job left in JetStream.

:class:`NatsLink` keeps the connection in the background: the operator reconciles while NATS
is away, and says why it is not ready. A job's coordinator may keep its state and checkpoints
in the job's own buckets (:mod:`edgeloom.api.jobstate`); a kind whose runs do (its plugin's
``cleanup``) deletes them with the resource, through a finalizer whose retries are bounded so a
NATS outage cannot block a deletion for long.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from edgeloom.api.jobstate import job_buckets
from edgeloom.runtime.natsauth import ADMIN, Issuer
from edgeloom_operators.config import OperatorConfig, redact

log = logging.getLogger(__name__)

BACKOFF_START_S = 1
BACKOFF_MAX_S = 30
"""Seconds between two attempts to reach NATS: doubling from the first to the second."""


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


class NatsUnavailable(RuntimeError):
    """The operator is not connected to NATS (not yet, or not any more); says why."""


StateChange = Callable[[bool, str], Awaitable[None]]
"""Told ``(connected, why)`` at each change of the connection (readiness, events)."""


class NatsLink:
    """The operator's connection to the jobs' NATS server, as its admin user, TLS verified
    against the configured CA.

    :meth:`connect` tries until it connects, and the client reconnects forever afterwards,
    both with capped exponential backoff (:data:`BACKOFF_START_S` doubling to
    :data:`BACKOFF_MAX_S`). Each failed attempt is one log line naming the URL (never its
    password) and the error, not a traceback; ``on_state`` hears every change.
    """

    def __init__(
        self, config: OperatorConfig, creds: OperatorCreds | None, on_state: StateChange
    ) -> None:
        self.url = config.nats_url
        self.shown_url = redact(config.nats_url)
        self.on_state = on_state
        self.reason = f"connecting to NATS at {self.shown_url}"
        """Why the link is down, or where it is connected."""
        self._options: dict[str, Any] = {}
        if creds is not None:
            self._options["user_credentials"] = str(creds.path)
        if config.nats_ca is not None or config.nats_url.startswith("tls://"):
            self._options["tls"] = ssl.create_default_context(cadata=config.nats_ca)
        self._nc = NATS()
        self._delay: float = BACKOFF_START_S

    @property
    def client(self) -> NATS:
        """The connected client.

        Raises
        ------
        NatsUnavailable
            While the link is down (the message says why).
        """
        if not self._nc.is_connected:
            raise NatsUnavailable(self.reason)
        return self._nc

    async def connect(self) -> NATS:
        """Connect, however long it takes; the connected client.

        Raises
        ------
        NatsUnavailable
            When the URL cannot be used at all (logged, and told to ``on_state``).
        """
        try:
            await self._nc.connect(
                self.url,
                name="edgeloom-operator",
                max_reconnect_attempts=-1,
                reconnect_time_wait=BACKOFF_START_S,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **self._options,
            )
        except NatsError as err:  # raised before any attempt: no retry can use this URL
            self.reason = f"cannot use the NATS URL {self.shown_url}: {err}"
            log.error("%s", self.reason)
            await self.on_state(False, self.reason)
            raise NatsUnavailable(self.reason) from None
        self._delay = BACKOFF_START_S
        self.reason = f"connected to NATS at {self.shown_url}"
        return self._nc

    async def close(self) -> None:
        """Drain a live connection, or stop reconnecting (cancel the task of :meth:`connect`
        to stop a first connection)."""
        if self._nc.is_connected:
            await self._nc.drain()
        elif self._nc.is_reconnecting:
            await self._nc.close()

    async def _on_error(self, err: Exception) -> None:
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if self._nc.is_connected:  # on a live connection: a permission refused, a slow consumer
            log.warning("NATS at %s: %s", self.shown_url, detail)
            return
        self.reason = f"cannot connect to NATS at {self.shown_url}: {detail}"
        log.warning("%s; next attempt in %g s", self.reason, self._delay)
        await self.on_state(False, self.reason)
        # nats-py awaits this callback before its next attempt: sleeping here is the backoff
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, BACKOFF_MAX_S)

    async def _on_disconnected(self) -> None:
        if self._nc.is_closed:
            return  # closed on purpose (the operator stops)
        self.reason = f"lost the connection to NATS at {self.shown_url}; reconnecting"
        log.warning("%s", self.reason)
        await self.on_state(False, self.reason)

    async def _on_reconnected(self) -> None:
        self._delay = BACKOFF_START_S
        self.reason = f"connected to NATS at {self.shown_url}"
        log.info("%s again", self.reason)
        await self.on_state(True, self.reason)


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
