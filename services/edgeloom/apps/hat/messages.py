"""Wire protocol between a HAT device and the cloud.

A sequence starts with :class:`OpenSession` on ``<service>.middle``, which the cloud replicas
share as a queue group: the replica that takes it answers :class:`Opened` with its own token,
and every later request of that sequence goes to ``<service>.middle.<token>``, where its KV
cache lives. A replica that is gone leaves no responder there, so the device's request fails at
once with a clear error instead of reaching a replica without the cache.

The device asks that replica to run the middle blocks on the input-submodel states of a
few positions of one of its sequences (:class:`MiddleRequest`, tensor ``hidden`` of shape
``(1, n, d)``); the cloud replies with their middle-submodel states (:class:`MiddleReply`, tensor
``hidden``). ``start`` names the position of the first state: the cloud forgets what it cached
from there on first, which is how a rejected draft is rolled back without a message of its
own. :class:`CloseSession` frees a sequence's cache. Only hidden states cross: never tokens.

The benchmark's baselines where tokens do cross use the same exchange with a whole-model cloud:
a request carries token ids (tensor ``tokens``, int64 ``(1, n)``) and the reply the full model's
greedy choice after each of them (``tokens``, ``(1, n)``); ``cloud-only`` asks the cloud to
generate the whole answer (:class:`GenerateRequest`, answered by :class:`Generated`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SESSION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
REPLICA_PATTERN = r"^[a-z0-9]{8,32}$"
"""A replica's token: one subject token, so a reply cannot route a device anywhere else."""
HIDDEN = "hidden"
"""The one tensor of a request and of its reply."""
TOKENS = "tokens"
"""The one tensor of a whole-model cloud's requests and replies."""
MAX_STOP_TOKENS = 8


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


MAX_VIRTUAL_S = 1e9
"""Bound on an emulated time in a message (about 30 years)."""
VirtualTime = Annotated[float, Field(ge=0, le=MAX_VIRTUAL_S)]


class MiddleRequest(_Msg):
    op: Literal["middle"] = "middle"
    session: str = Field(pattern=SESSION_PATTERN, description="The device's sequence.")
    start: int = Field(ge=0, description="Position of the first state in ``hidden``.")
    arrive_at: float | None = Field(
        default=None,
        ge=0,
        le=MAX_VIRTUAL_S,
        description="Emulated time the request reaches the cloud, when the device emulates one "
        "(the cloud then schedules it on its own emulated clock).",
    )


class MiddleReply(_Msg):
    cached: int = Field(ge=0, description="Positions the cloud holds for the session now.")
    compute_s: float = Field(
        default=0.0, ge=0, le=MAX_VIRTUAL_S, description="Emulated cloud compute of the request."
    )
    done_at: float | None = Field(
        default=None,
        ge=0,
        le=MAX_VIRTUAL_S,
        description="Emulated time the reply leaves the cloud (with ``arrive_at``).",
    )


class GenerateRequest(_Msg):
    """Greedy decoding in the cloud alone after the prompt in tensor ``tokens`` (a new
    sequence)."""

    op: Literal["generate"] = "generate"
    session: str = Field(pattern=SESSION_PATTERN)
    max_new_tokens: int = Field(ge=1, le=65_536)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=MAX_STOP_TOKENS)
    arrive_at: float | None = Field(default=None, ge=0, le=MAX_VIRTUAL_S)


class Generated(_Msg):
    """The new tokens (tensor ``tokens``, ``(1, k)``) and, with ``arrive_at``, the emulated time
    each left the cloud."""

    compute_s: float = Field(default=0.0, ge=0, le=MAX_VIRTUAL_S)
    emitted_at: list[VirtualTime] | None = Field(default=None, max_length=65_536)


class OpenSession(_Msg):
    op: Literal["open"] = "open"
    session: str = Field(pattern=SESSION_PATTERN)


class Opened(_Msg):
    replica: str = Field(pattern=REPLICA_PATTERN, description="The serving replica's token.")


class CloseSession(_Msg):
    op: Literal["close"] = "close"
    session: str = Field(pattern=SESSION_PATTERN)


class Closed(_Msg):
    freed_bytes: int = Field(ge=0)
