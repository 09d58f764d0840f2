"""Envelopes shared by every kind: status reports and the final job result."""

from __future__ import annotations

from typing import Any

from pydantic import Field

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
