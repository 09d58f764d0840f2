"""The HatInferenceService plugin: service semantics (Available, Progressing, Degraded from
its Deployments) and its dashboard rows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgeloom.api.kinds.hatinferenceservice import KIND, HatInferenceServiceSpec
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.dashboards.hatinferenceservice import DASHBOARD
from edgeloom_operators.dashboards.panels import KindDashboard
from edgeloom_operators.hatinferenceservice.render import HTTP_PORT_NAME, role_deployments
from edgeloom_operators.plugin import DEPLOYMENTS, Children, ServicePlugin
from edgeloom_operators.render import service_children
from edgeloom_operators.status import Outcome


class HatInferenceServicePlugin(ServicePlugin):
    """A Deployment per role (per device group for the devices), each with its Service."""

    info = KIND

    def render(
        self, body: dict[str, Any], spec: HatInferenceServiceSpec, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        return service_children(body, KIND, role_deployments(spec), config)

    def outcome(self, children: Children) -> Outcome:
        """The Deployments' verdict, with the cloud replicas asked for and every device
        group's in-cluster endpoint."""
        outcome = super().outcome(children)
        fields = dict(outcome.fields)
        endpoints = []
        for deployment in children.get(DEPLOYMENTS.kind, ()):
            meta, spec = deployment["metadata"], deployment.get("spec") or {}
            role = meta.get("labels", {}).get("edgeloom.io/role")
            if role == "cloud":
                fields["cloudReplicas"] = int(spec.get("replicas", 1))
            (container,) = spec["template"]["spec"]["containers"]
            for port in container.get("ports", []):
                if role == "device" and port["name"] == HTTP_PORT_NAME:
                    host = f"{meta['name']}.{meta['namespace']}.svc"
                    endpoints.append(f"http://{host}:{port['containerPort']}/v1")
        fields["endpoints"] = sorted(endpoints)
        return replace(outcome, fields=fields)

    def dashboard(self) -> KindDashboard:
        return DASHBOARD
