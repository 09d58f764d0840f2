"""What service kinds share: they run until deleted, as a Deployment of replicas, and report
Available / Progressing / Degraded the way a Deployment does.

A service kind's status model subclasses :class:`ServiceStatus` (the replica counts and the
pod selector the operator copies from its Deployment) and its registration sets
``scale=SERVICE_SCALE``, so ``kubectl scale`` and a HorizontalPodAutoscaler work on it.
"""

from __future__ import annotations

from pydantic import Field

from edgeloom.api.registry import ScaleSubresource
from edgeloom.api.status import Status

SERVICE_SCALE = ScaleSubresource(
    spec_replicas_path=".spec.replicas",
    status_replicas_path=".status.replicas",
    label_selector_path=".status.selector",
)
"""The scale subresource of a service kind: ``spec.replicas`` in, ``status.replicas`` and
``status.selector`` out."""


class ServiceStatus(Status):
    """Status of a long-running service: the shared fields plus its replicas."""

    replicas: int | None = Field(
        default=None, ge=0, description="Pods the service's Deployment has (any state)."
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods that are ready.")
    available_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Pods ready for at least the Deployment's minReadySeconds (serving).",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the service's pods (what the scale subresource reports).",
    )
