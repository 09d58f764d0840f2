"""Envelopes shared by every kind: the final job result, and the participant messages of every
federated kind (joining, and the operator's DropWorkers on the job's ``control`` subject)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgeloom.api.base import ApiModel


class JobResult(ApiModel):
    """What a job's coordinator publishes once, when it finishes."""

    succeeded: bool = Field(description="Whether the job reached its goal without failing.")
    message: str = Field(default="", description="Why it ended.")
    status: dict[str, Any] = Field(description="The final status, as in .status.")
    summary: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, description="Headline figures, printed as a table."
    )
    metric_name: str = Field(default="accuracy", description="Headline metric in history.")
    history: list[dict[str, float | int | None]] = Field(
        default_factory=list,
        description="One row per round: round, virtual_time_seconds, the metric, ...",
    )


class JoinRequest(BaseModel):
    """Participant -> coordinator on the job's ``join`` subject; each kind's join message
    subclasses it with what its coordinator needs to know (data held, device profile)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="The participant's index in the job.")


class JoinAck(ApiModel):
    """Coordinator -> participant: whether its join was accepted."""

    accepted: bool = Field(description="Whether the participant takes part in the job.")
    reason: str = Field(default="", max_length=1024, description="Why not, when refused.")
    retire: bool = Field(
        default=False,
        description="The job has dropped this participant for good: it should exit successfully.",
    )


class DropWorkers(ApiModel):
    """Operator -> coordinator on the job's ``control`` subject: stop using these workers."""

    workers: list[int] = Field(min_length=1, description="Global worker indices to drop.")
    reason: str = Field(default="", max_length=1024, description="Why, for the server's log.")


class WorkersDropped(ApiModel):
    """Coordinator -> operator: the workers now excluded from every later round."""

    dropped: list[int] = Field(description="Every worker the job has dropped so far.")
