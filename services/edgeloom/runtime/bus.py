"""The message bus over NATS: typed envelopes + tensors, chunking, request-reply, state.

Every message is one :mod:`edgeloom.runtime.codec` payload (safetensors with the envelope in
its metadata). Payloads above the server's ``max_payload`` are chunked transparently
(:mod:`edgeloom.runtime.transfer`); large artifacts can instead go through the JetStream
object store. Every request has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import torch
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as Subscription  # what subscribe returns
from pydantic import BaseModel, ValidationError

from edgeloom.api import podenv
from edgeloom.runtime.codec import DEFAULT_LIMITS, CodecError, Limits, decode, encode
from edgeloom.runtime.framing import H_ERROR
from edgeloom.runtime.transfer import Reassembler, send

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
DEFAULT_TIMEOUT_S = 30.0
REPLY_TRANSFERS = 1024
"""Chunked replies a client may be receiving at once (their bytes stay bounded)."""


class RemoteError(RuntimeError):
    """The responder reported an error instead of a reply."""


class NoResponders(RemoteError):
    """Nobody subscribes to the request's subject (yet); retrying later may succeed."""


_NO_RESPONDERS = "no responders"


@dataclass
class Message:
    """A received, reassembled and decoded message."""

    subject: str
    reply: str
    envelope_json: str
    tensors: dict[str, torch.Tensor]
    error: str | None = None
    """Set when the sender answered with an error instead of a result."""

    def parse(self, model: type[M]) -> M:
        """Validate the envelope against ``model``; CodecError names the bad fields."""
        try:
            return model.model_validate_json(self.envelope_json)
        except ValidationError as err:
            raise CodecError(f"invalid {model.__name__} envelope: {err}") from None


Handler = Callable[[Message], Awaitable[None]]
ErrorHandler = Callable[[str, Exception], None]


def _envelope_json(envelope: BaseModel | str) -> str:
    if isinstance(envelope, str):
        return envelope
    return envelope.model_dump_json(by_alias=True, exclude_none=True)


def _log_error(subject: str, err: Exception) -> None:
    log.warning("rejected message on %s: %s", subject, err)


@dataclass
class Bus:
    """A NATS connection speaking edgeloom's envelope format."""

    nc: Client
    limits: Limits = DEFAULT_LIMITS
    bytes_sent: int = 0
    bytes_received: int = 0
    _pending: dict[str, asyncio.Future[Message]] = field(default_factory=dict)
    _inbox: str = ""
    _inbox_seq: int = 0

    @classmethod
    async def connect(
        cls,
        access: NatsAccess | str,
        name: str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        connect_deadline_s: float = 30.0,
        inbox_prefix: str = "_INBOX",
        stop: asyncio.Event | None = None,
    ) -> Bus:
        """Connect, retrying until ``connect_deadline_s`` (or until ``stop`` is set, e.g. by
        SIGTERM); reconnect forever afterwards. ``inbox_prefix`` is where replies arrive (a
        role's credentials allow it its own prefix only).

        Raises
        ------
        ConnectionError
            No connection in time, or ``stop`` was set first; names the server's last
            refusal (an authorization violation) or else the last error (a TLS failure, an
            unreachable server).
        """
        access = NatsAccess(access) if isinstance(access, str) else access
        errors: list[Exception] = []

        async def on_error(err: Exception) -> None:
            errors.append(err)
            log.debug("nats: %s", err)

        attempt = asyncio.ensure_future(
            nats.connect(
                servers=[access.url],
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,  # also retries the first connect, hence the deadline
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=on_error,
                inbox_prefix=inbox_prefix,
                **access.options(),
            )
        )
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
        waits: set[asyncio.Future[Any]] = {attempt} if stopped is None else {attempt, stopped}
        await asyncio.wait(waits, timeout=connect_deadline_s, return_when=FIRST_COMPLETED)
        if stopped is not None:
            stopped.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            why = "stopped" if stop is not None and stop.is_set() else "no connection in time"
            # the server's own -ERR (nats-py raises it as a plain Error: bad credentials, say)
            # says more than the connection resets that follow it on the next attempts
            refusals = [err for err in errors if type(err) is nats.errors.Error]
            named = (refusals or errors)[-1:]
            last = f": {str(named[0]) or type(named[0]).__name__}" if named else ""
            raise ConnectionError(f"cannot reach NATS at {access.url} ({why}){last}")
        if (failed := attempt.exception()) is not None:  # e.g. refused credentials
            raise ConnectionError(f"cannot reach NATS at {access.url}: {failed}") from failed
        nc = attempt.result()
        bus = cls(nc=nc, limits=limits)
        bus._inbox = nc.new_inbox()
        # every reply to this client arrives here, from as many participants as it asks at once
        await bus.subscribe(f"{bus._inbox}.*", bus._on_reply, max_partial=REPLY_TRANSFERS)
        return bus

    @property
    def max_payload(self) -> int:
        return self.nc.max_payload

    async def publish(
        self,
        subject: str,
        envelope: BaseModel | str,
        tensors: dict[str, torch.Tensor] | None = None,
        reply: str = "",
        error: str | None = None,
    ) -> None:
        """Publish one message, chunked when it exceeds the server's max_payload."""
        extra = {H_ERROR: error} if error is not None else {}

        async def publish_one(payload: bytes | memoryview, headers: dict[str, str]) -> None:
            await self.nc.publish(
                subject,
                # nats-py annotates bytes but takes any buffer (it only adds it to bytes)
                payload,  # type: ignore[arg-type]
                reply=reply,
                headers={**headers, **extra} or None,
            )

        self.bytes_sent += await send(
            encode(_envelope_json(envelope), tensors), self.max_payload, publish_one
        )

    async def subscribe(
        self,
        subject: str,
        handler: Handler,
        queue: str = "",
        on_error: ErrorHandler = _log_error,
        max_partial: int = 16,
    ) -> Subscription:
        """Call ``handler`` for each complete, decoded message.

        Malformed or corrupted messages go to ``on_error`` and never reach the handler; a
        handler's exception is logged (and answered with an error when the sender waits for a
        reply) without ending the subscription. Use ``queue`` for worker pools. At most
        ``max_partial`` chunked transfers are reassembled at once (their bytes are bounded
        too: :class:`~edgeloom.runtime.transfer.Reassembler`).
        """
        reassembler = Reassembler(self.limits, max_partial=max_partial, name=subject)

        async def on_msg(msg: Msg) -> None:
            self.bytes_received += len(msg.data)
            headers = msg.headers or {}
            if headers.get("Status") == "503":  # the server's answer to a request nobody heard
                await handler(Message(msg.subject, "", "", {}, error=_NO_RESPONDERS))
                return
            try:
                payload = await reassembler.feed(msg.data, headers)
                if payload is None:
                    return
                envelope_json, tensors = decode(payload, self.limits)
            except CodecError as err:
                on_error(msg.subject, err)
                if msg.reply and H_ERROR not in headers:
                    await self.publish(msg.reply, "{}", error=f"rejected: {err}")
                return
            message = Message(
                msg.subject, msg.reply, envelope_json, tensors, error=headers.get(H_ERROR)
            )
            try:
                await handler(message)
            except Exception as err:  # a bad message must not end the subscription
                log.exception("handler for %s failed", msg.subject)
                if msg.reply:
                    await self.publish(msg.reply, "{}", error=f"{type(err).__name__}: {err}")

        sub = await self.nc.subscribe(
            subject,
            queue=queue,
            cb=on_msg,
            pending_msgs_limit=-1,
            pending_bytes_limit=2 * self.limits.max_bytes,
        )
        # nats-py writes flush()'s PING straight to the socket, ahead of a SUB still queued for
        # its flusher task, so one PONG does not prove the server has the subscription. The
        # flusher runs while the first PONG is awaited, so the second PING follows the SUB:
        # after it the subscription is live on the server.
        await self.nc.flush()
        await self.nc.flush()
        return sub

    async def request(
        self,
        subject: str,
        envelope: BaseModel | str,
        tensors: dict[str, torch.Tensor] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Message:
        """Send a request and wait at most ``timeout`` seconds for its (possibly chunked) reply.

        Raises
        ------
        TimeoutError
            No reply in time.
        NoResponders
            Nobody listens on ``subject``.
        RemoteError
            The responder answered with an error.
        """
        self._inbox_seq += 1
        token = str(self._inbox_seq)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            await self.publish(subject, envelope, tensors, reply=f"{self._inbox}.{token}")
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply on {subject} within {timeout:g} s") from None
        finally:
            self._pending.pop(token, None)
        if reply.error == _NO_RESPONDERS:
            raise NoResponders(f"no responders on {subject}")
        if reply.error is not None:
            raise RemoteError(f"{subject}: {reply.error}")
        return reply

    async def respond(
        self,
        request: Message,
        envelope: BaseModel | str,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Reply to a request received through :meth:`subscribe`."""
        if not request.reply:
            raise ValueError(f"message on {request.subject} expects no reply")
        await self.publish(request.reply, envelope, tensors)

    async def _on_reply(self, message: Message) -> None:
        future = self._pending.get(message.subject.rsplit(".", 1)[-1])
        if future is not None and not future.done():
            future.set_result(message)

    async def put_object(
        self,
        bucket: str,
        name: str,
        envelope: BaseModel | str,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> int:
        """Store one encoded message in the JetStream object store; returns its size."""
        store = await self._object_store(bucket)
        data = encode(_envelope_json(envelope), tensors).tobytes()
        await store.put(name, data)
        self.bytes_sent += len(data)
        return len(data)

    async def get_object(self, bucket: str, name: str) -> Message:
        """Fetch and decode an object stored by :meth:`put_object` (digest checked by NATS)."""
        store = await self._object_store(bucket)
        try:
            result = await store.get(name)
        except nats.js.errors.ObjectNotFoundError:
            raise KeyError(f"no object {name!r} in bucket {bucket!r}") from None
        data = result.data or b""
        self.bytes_received += len(data)
        envelope_json, tensors = decode(bytearray(data), self.limits)
        return Message(f"$O.{bucket}.{name}", "", envelope_json, tensors)

    async def _object_store(self, bucket: str):  # type: ignore[no-untyped-def]
        js = self.nc.jetstream()
        try:
            return await js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_object_store(bucket)

    async def key_value(self, bucket: str) -> StateStore:
        """A JetStream KV bucket for job state that must survive restarts."""
        js = self.nc.jetstream()
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, history=1)
        return StateStore(kv)

    async def drain(self) -> None:
        """Finish in-flight messages and close; safe to call twice."""
        if not self.nc.is_closed:
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await self.nc.drain()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()


@dataclass
class StateStore:
    """Typed job state in a JetStream KV bucket."""

    kv: object

    async def put(self, key: str, value: BaseModel) -> None:
        await self.kv.put(key, value.model_dump_json(by_alias=True).encode())  # type: ignore[attr-defined]

    async def get(self, key: str, model: type[M]) -> M | None:
        """The stored value, or None when the key does not exist."""
        try:
            entry = await self.kv.get(key)  # type: ignore[attr-defined]
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        try:
            return model.model_validate_json(entry.value)
        except ValidationError as err:
            raise CodecError(f"state {key!r} is not a valid {model.__name__}: {err}") from None


@dataclass(frozen=True)
class NatsAccess:
    """Where and as whom to connect: the URL (``tls://`` for TLS), a ``.creds`` file (the
    role's user JWT and seed, :mod:`edgeloom.runtime.natsauth`) and the CA that signed the
    server's certificate."""

    url: str
    creds: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def from_env(cls, url: str | None = None) -> NatsAccess:
        """From EDGELOOM_NATS_URL (unless ``url`` is given), EDGELOOM_NATS_CREDS and
        EDGELOOM_NATS_CA_FILE (in a pod: files of the job's Secret)."""
        url = url or os.environ.get(podenv.NATS_URL)
        if not url:
            raise RuntimeError(f"{podenv.NATS_URL} is not set")
        creds, ca = os.environ.get(podenv.NATS_CREDS), os.environ.get(podenv.NATS_CA_FILE)
        return cls(url, Path(creds) if creds else None, Path(ca) if ca else None)

    def options(self) -> dict[str, Any]:
        """nats-py ``connect`` options: credentials (re-read at each reconnect, so rotated
        files take effect) and a TLS context that verifies the server against the CA."""
        out: dict[str, Any] = {}
        if self.creds is not None:
            out["user_credentials"] = str(self.creds)
        if self.ca_file is not None or self.url.startswith("tls://"):
            out["tls"] = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file else None
            )
        return out


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT so the role can drain and exit cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
