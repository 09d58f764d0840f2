"""The HatInferenceService plugin: service semantics (Available, Progressing, Degraded from
its Deployments) and its dashboard rows."""

from __future__ import annotations

from typing import Any

from edgeloom.api.kinds.hatinferenceservice import KIND, HatInferenceServiceSpec
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.dashboards.hatinferenceservice import DASHBOARD
from edgeloom_operators.dashboards.panels import KindDashboard
from edgeloom_operators.hatinferenceservice.render import role_deployments
from edgeloom_operators.plugin import ServicePlugin
from edgeloom_operators.render import service_children


class HatInferenceServicePlugin(ServicePlugin):
    """A Deployment per role (per device group for the devices), each with its Service."""

    info = KIND

    def render(
        self, body: dict[str, Any], spec: HatInferenceServiceSpec, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        return service_children(body, KIND, role_deployments(spec), config)

    def dashboard(self) -> KindDashboard:
        return DASHBOARD
