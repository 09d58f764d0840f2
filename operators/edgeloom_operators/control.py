"""Requests the operator sends to a running job's coordinator over NATS."""

from __future__ import annotations

import nats
from nats.aio.client import Client as NATS

from edgeloom.api.messages import DropWorkers, WorkersDropped
from edgeloom.api.registry import KindInfo
from edgeloom.runtime.framing import H_ERROR, frame_envelope, read_envelope
from edgeloom.runtime.subjects import subject

TIMEOUT_S = 10.0


class ControlError(RuntimeError):
    """The coordinator refused the request or did not answer."""


async def drop_workers(
    nc: NATS, info: KindInfo, namespace: str, name: str, workers: list[int], reason: str
) -> list[int]:
    """Ask the coordinator of a federated job to stop using ``workers`` for the rest of the job;
    returns every worker it has dropped so far."""
    request = DropWorkers(workers=workers, reason=reason[:1024])
    try:
        reply = await nc.request(
            subject(namespace, info.singular, name, "control"),
            frame_envelope(request.model_dump_json(by_alias=True)),
            timeout=TIMEOUT_S,
        )
    except (TimeoutError, nats.errors.Error) as err:
        raise ControlError(f"the coordinator of {namespace}/{name} did not answer: {err}") from None
    error = (reply.headers or {}).get(H_ERROR)
    if error:
        raise ControlError(
            f"the coordinator of {namespace}/{name} refused to drop {workers}: {error}"
        )
    return WorkersDropped.model_validate_json(read_envelope(reply.data)).dropped
