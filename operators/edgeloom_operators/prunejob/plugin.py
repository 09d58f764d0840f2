"""The PruneJob plugin: job semantics; its outputs belong to the user, so nothing is cleaned
up outside Kubernetes, and it has no loops."""

from __future__ import annotations

from typing import Any

from edgeloom.api.kinds.prunejob import KIND, PruneJobSpec
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.dashboards.panels import KindDashboard
from edgeloom_operators.dashboards.prunejob import DASHBOARD
from edgeloom_operators.plugin import JobPlugin
from edgeloom_operators.prunejob.render import role_jobs
from edgeloom_operators.render import children


class PruneJobPlugin(JobPlugin):
    """Job semantics and its dashboard rows, every other hook at its default."""

    info = KIND

    def render(
        self, body: dict[str, Any], spec: PruneJobSpec, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        return children(body, KIND, role_jobs(spec), config)

    def dashboard(self) -> KindDashboard:
        return DASHBOARD
