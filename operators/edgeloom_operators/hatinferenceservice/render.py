"""Children of a HatInferenceService: the cloud replicas on the cloud tier (a GPU each when
``cloud.gpu``) and, per device group, a Deployment on edge nodes with the group's
device-profile label and a Service for its HTTP port.

Device indices are global across groups (a device finds its group, and so its profile and
port, from its index), so each group's pods get the sum of the counts before it. A device
is ready once its endpoint answers ``/healthz``: after its adapter is prepared.
"""

from __future__ import annotations

from typing import Any

from edgeloom.api.kinds.hatinferenceservice import KIND, HatInferenceServiceSpec
from edgeloom_operators.render import Placement, RoleDeployment, ServicePort

HTTP_PORT_NAME = "http"


def cloud_replicas(body: dict[str, Any], spec: HatInferenceServiceSpec) -> int:
    """The cloud replicas to run: ``cloud.replicas``, or with autoscaling what the loop chose
    last (``status.cloudReplicas``, kept between ``minReplicas`` and ``maxReplicas``)."""
    scaled = (body.get("status") or {}).get("cloudReplicas")
    if not spec.autoscaling.enabled or not isinstance(scaled, int):
        return spec.cloud.replicas
    return max(spec.cloud.min_replicas, min(spec.cloud.max_replicas, scaled))


def role_deployments(spec: HatInferenceServiceSpec, cloud_count: int) -> list[RoleDeployment]:
    """The cloud's Deployment of ``cloud_count`` replicas and one Deployment per device
    group."""
    cloud, device = KIND.role("cloud"), KIND.role("device")
    roles = [
        RoleDeployment(
            cloud.name,
            Placement(cloud.tier, gpus=1 if spec.cloud.gpu else 0),
            replicas=cloud_count,
            requests={"cpu": "1", "memory": "2Gi"},
        )
    ]
    index = 0
    for group in spec.devices:
        roles.append(
            RoleDeployment(
                device.name,
                Placement(device.tier, device_profile=group.device_profile_label),
                replicas=group.count,
                ports=(ServicePort(HTTP_PORT_NAME, group.port),),
                requests={"cpu": "500m", "memory": "1Gi"},
                group=group.name,
                index=index,
                ready_path="/healthz",
            )
        )
        index += group.count
    return roles
