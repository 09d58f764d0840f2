"""The HatInferenceService plugin: service semantics (Available, Progressing, Degraded from
its Deployments), its status fields, its dashboard rows, and the loop that scales the cloud
replicas on Prometheus data."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edgeloom.api.kinds.hatinferenceservice import KIND, HatInferenceServiceSpec
from edgeloom.api.resource import InvalidResource, parse_resource
from edgeloom.api.status import Phase
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.dashboards.hatinferenceservice import DASHBOARD
from edgeloom_operators.dashboards.panels import KindDashboard
from edgeloom_operators.hatinferenceservice.autoscale import (
    SCALING,
    Stabilizer,
    load_query,
    load_value,
    recommend,
)
from edgeloom_operators.hatinferenceservice.render import (
    HTTP_PORT_NAME,
    cloud_replicas,
    role_deployments,
)
from edgeloom_operators.plugin import DEPLOYMENTS, Children, KindPlugin, Loop, ServicePlugin
from edgeloom_operators.prometheus import PrometheusError
from edgeloom_operators.render import service_children
from edgeloom_operators.status import AVAILABLE, Outcome

if TYPE_CHECKING:
    from edgeloom_operators.handlers import Operator

ACTIVE = (Phase.RUNNING, Phase.DEGRADED)
"""Phases in which the cloud replicas are scaled."""


class HatInferenceServicePlugin(ServicePlugin):
    """A Deployment per role (per device group for the devices), each with its Service, and
    the loop that scales the cloud replicas
    (:mod:`edgeloom_operators.hatinferenceservice.autoscale`)."""

    info = KIND
    owned_conditions: tuple[str, ...] = (AVAILABLE, SCALING)

    def __init__(self) -> None:
        self.stabilizers: dict[tuple[str, str, str], Stabilizer] = {}

    def render(
        self, body: dict[str, Any], spec: HatInferenceServiceSpec, config: OperatorConfig
    ) -> list[dict[str, Any]]:
        roles = role_deployments(spec, cloud_replicas(body, spec))
        return service_children(body, KIND, roles, config)

    def outcome(self, children: Children) -> Outcome:
        """The Deployments' verdict, with the cloud replicas asked for, their pod selector
        (the scale subresource's) and every device group's in-cluster endpoint."""
        outcome = super().outcome(children)
        fields = dict(outcome.fields)
        endpoints = []
        for deployment in children.get(DEPLOYMENTS.kind, ()):
            meta, spec = deployment["metadata"], deployment.get("spec") or {}
            role = meta.get("labels", {}).get("edgeloom.io/role")
            if role == "cloud":
                fields["cloudReplicas"] = int(spec.get("replicas", 1))
                labels = spec["selector"]["matchLabels"]
                fields["cloudSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            (container,) = spec["template"]["spec"]["containers"]
            for port in container.get("ports", []):
                if role == "device" and port["name"] == HTTP_PORT_NAME:
                    host = f"{meta['name']}.{meta['namespace']}.svc"
                    endpoints.append(f"http://{host}:{port['containerPort']}/v1")
        fields["endpoints"] = sorted(endpoints)
        return replace(outcome, fields=fields)

    def dashboard(self) -> KindDashboard:
        return DASHBOARD

    def loops(self) -> tuple[Loop, ...]:
        return (Loop("cloud-autoscaling", self.scale_cloud, ACTIVE, lambda c: c.health_interval_s),)

    async def scale_cloud(
        self, operator: Operator, plugin: KindPlugin, body: dict[str, Any]
    ) -> None:
        """One autoscaling check: read the load, decide the cloud replicas, apply them to the
        cloud Deployment (the render keeps them, from ``status.cloudReplicas``); the verdict
        goes into CloudScaling."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        key = (namespace, KIND.kind, name)
        try:
            spec = parse_resource(body, HatInferenceServiceSpec, KIND.kind).spec
        except InvalidResource:
            return
        scaling = spec.autoscaling
        if not scaling.enabled or (body.get("status") or {}).get("phase") not in ACTIVE:
            return
        if operator.prometheus is None:
            message = "no Prometheus is configured (chart value prometheus.url): not scaled"
            operator.set_verdict(key, SCALING, ("Unknown", "PrometheusNotConfigured", message))
            return
        try:
            samples = await asyncio.to_thread(
                operator.prometheus.query, load_query(namespace, name, scaling)
            )
        except PrometheusError as err:
            operator.set_verdict(key, SCALING, ("Unknown", "PrometheusUnavailable", str(err)))
            return
        current = cloud_replicas(body, spec)
        value = load_value(samples)
        if value is None:
            message = f"no {scaling.metric} data in the last {scaling.window_seconds:g} s"
            operator.set_verdict(key, SCALING, ("True", "NoLoad", message))
            return
        c = spec.cloud
        recommended = recommend(current, value, scaling, c.min_replicas, c.max_replicas)
        stabilizer = self.stabilizers.setdefault(key, Stabilizer())
        window = scaling.scale_down_stabilization_seconds
        replicas = stabilizer.decide(time.monotonic(), current, recommended, window)
        what = f"{scaling.metric} {value:.3g} against a target of {scaling.target:g}"
        if replicas != current:
            scaled = {**body, "status": {**(body.get("status") or {}), "cloudReplicas": replicas}}
            for child in self.render(scaled, spec, operator.config):
                if child["kind"] == "Deployment" and child["metadata"]["name"].endswith("-cloud"):
                    await asyncio.to_thread(operator.kube.apply, child)
            message = f"cloud replicas {current} -> {replicas}: {what}"
            await asyncio.to_thread(operator.kube.event, body, "Normal", "CloudScaled", message)
            operator.set_verdict(key, SCALING, ("True", "Scaled", message))
            return
        operator.set_verdict(key, SCALING, ("True", "Steady", f"{current} replicas: {what}"))
