"""Children of a PruneJob: one pruner pod on the cloud tier, with a GPU when ``spec.gpu``.

Pruning holds one transformer block plus calibration activations at a time, so the memory
request follows the model: a few GiB for the built-in models.
"""

from __future__ import annotations

from edgeloom.api.kinds.prunejob import KIND, PruneJobSpec
from edgeloom_operators.render import Placement, RoleJob, output_claims


def role_jobs(spec: PruneJobSpec) -> list[RoleJob]:
    """The pruner's Job; the claim ``output.volumeClaim`` names is mounted at ``output.path``
    (without one the model goes to the pod's emptyDir work folder)."""
    pruner = KIND.roles[0]
    return [
        RoleJob(
            pruner.name,
            Placement(pruner.tier, gpus=1 if spec.gpu else 0),
            requests={"cpu": "1", "memory": "4Gi"},
            claims=output_claims(spec.output),
        )
    ]
