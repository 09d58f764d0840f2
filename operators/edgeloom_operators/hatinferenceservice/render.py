"""Children of a HatInferenceService: the cloud replicas on the cloud tier (a GPU each when
``cloud.gpu``) and, per device group, a Deployment on edge nodes with the group's
device-profile label and a Service for its HTTP port.

Device indices are global across groups (a device finds its group, and so its profile and
port, from its index), so each group's pods get the sum of the counts before it. A device
is ready once its endpoint answers ``/healthz``: after its adapter is prepared.
"""

from __future__ import annotations

from edgeloom.api.kinds.hatinferenceservice import KIND, HatInferenceServiceSpec
from edgeloom_operators.render import Placement, RoleDeployment, ServicePort

HTTP_PORT_NAME = "http"


def role_deployments(spec: HatInferenceServiceSpec) -> list[RoleDeployment]:
    """The cloud's Deployment and one Deployment per device group."""
    cloud, device = KIND.role("cloud"), KIND.role("device")
    roles = [
        RoleDeployment(
            cloud.name,
            Placement(cloud.tier, gpus=1 if spec.cloud.gpu else 0),
            replicas=spec.cloud.replicas,
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
