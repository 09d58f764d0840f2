"""Children of a SplitTrainingJob: the server on the cloud tier (a GPU when ``spec.gpu``) and
each worker group as an Indexed Job on edge nodes with the group's device-profile label.

Worker indices are global across groups (the partition and the device profile follow the
index), so each group's Job starts at the sum of the counts before it.
"""

from __future__ import annotations

from edgeloom.api.kinds.splittraining import KIND, SplitTrainingJobSpec
from edgeloom_operators.render import Placement, RoleJob


def role_jobs(spec: SplitTrainingJobSpec) -> list[RoleJob]:
    """The server's Job and one Indexed Job per worker group, indices global across groups."""
    server, worker = KIND.role("server"), KIND.role("worker")
    jobs = [RoleJob(server.name, Placement(server.tier, gpus=1 if spec.gpu else 0))]
    offset = 0
    for group in spec.workers:
        jobs.append(
            RoleJob(
                worker.name,
                Placement(worker.tier, device_profile=group.device_profile_label),
                replicas=group.count,
                offset=offset,
                group=group.name,
                essential=worker.essential,
                requests={"cpu": "250m", "memory": "512Mi"},
            )
        )
        offset += group.count
    return jobs
