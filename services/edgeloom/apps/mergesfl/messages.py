"""Wire protocol between the SplitTrainingJob server and its workers.

Every command goes to ``<job>.worker.<index>`` as a request, stamped with the server's session
and a request id (:class:`~edgeloom.runtime.federation.Stamped`) so that a worker refuses
replays; the worker answers with the matching reply. Tensors travel beside the envelope (see
:mod:`edgeloom.runtime.codec`). Floats must be finite: a NaN or an infinity is refused with the
rest of a malformed envelope.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from edgeloom.api.device import DeviceProfile
from edgeloom.api.messages import JoinRequest
from edgeloom.runtime.federation import Stamped

MAX_COUNT = 2**53
"""Sample counts beyond this are not exact as float64 (the selection's label mix)."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Command(_Msg, Stamped):
    """A server -> worker request."""


class Join(JoinRequest):
    """Worker -> server when it starts: who it is and what data it holds (the server checks
    that the label counts add up to the samples, one per class)."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(ge=0, le=MAX_COUNT)
    label_counts: list[Annotated[int, Field(ge=0, le=MAX_COUNT)]]
    profile: DeviceProfile


class Load(_Command):
    """Start of a round: take these weights (tensors) and this batch size."""

    op: Literal["load"] = "load"
    round: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    whole_model: bool = False
    """fedavg: the tensors are the whole model, not the bottom."""


class Forward(_Command):
    """Run the bottom model on the next local batch; reply with features and labels."""

    op: Literal["forward"] = "forward"
    round: int = Field(ge=0)
    iteration: int = Field(ge=0)


class Backward(_Command):
    """Apply the feature gradient (tensor ``grad``) and take an optimiser step."""

    op: Literal["backward"] = "backward"
    round: int = Field(ge=0)
    iteration: int = Field(ge=0)


class TrainLocal(_Command):
    """fedavg: train the whole model locally for ``iterations`` steps."""

    op: Literal["train_local"] = "train_local"
    round: int = Field(ge=0)
    iterations: int = Field(ge=1)


class Upload(_Command):
    """End of a round: send the trained weights back."""

    op: Literal["upload"] = "upload"
    round: int = Field(ge=0)


class Stop(_Command):
    """End of the job: exit."""

    op: Literal["stop"] = "stop"


Command = Annotated[
    Load | Forward | Backward | TrainLocal | Upload | Stop, Field(discriminator="op")
]
COMMAND = TypeAdapter(Command)


class Timing(_Msg):
    """What a worker spent on one command, in device seconds (see DeviceClock)."""

    compute_s: float = Field(default=0.0, ge=0)
    upload_s: float = Field(default=0.0, ge=0)
    download_s: float = Field(default=0.0, ge=0)
    samples: int = Field(default=0, ge=0)
    loss: float | None = None

    @property
    def total_s(self) -> float:
        return self.compute_s + self.upload_s + self.download_s
