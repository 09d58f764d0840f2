"""Wire protocol between a HAT device and the cloud.

The device asks ``<service>.cloud`` to run the middle blocks on the input-submodel states of a
few positions of one of its sequences (:class:`MiddleRequest`, tensor ``hidden`` of shape
``(1, n, d)``); the cloud replies with their middle-submodel states (:class:`MiddleReply`, tensor
``hidden``). ``start`` names the position of the first state: the cloud forgets what it cached
from there on first, which is how a rejected draft is rolled back without a message of its
own. :class:`CloseSession` frees a sequence's cache. Only hidden states cross: never tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SESSION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
HIDDEN = "hidden"
"""The one tensor of a request and of its reply."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MiddleRequest(_Msg):
    op: Literal["middle"] = "middle"
    session: str = Field(pattern=SESSION_PATTERN, description="The device's sequence.")
    start: int = Field(ge=0, description="Position of the first state in ``hidden``.")


class MiddleReply(_Msg):
    cached: int = Field(ge=0, description="Positions the cloud holds for the session now.")


class CloseSession(_Msg):
    op: Literal["close"] = "close"
    session: str = Field(pattern=SESSION_PATTERN)


class Closed(_Msg):
    freed_bytes: int = Field(ge=0)
