"""Children of a PruneJob: one pruner pod on the cloud tier, with a GPU when ``spec.gpu``.

Pruning holds one transformer block plus calibration activations at a time, so the memory
request follows the model: a few GiB for the built-in models.
"""

from __future__ import annotations

from typing import Any

from edgeloom.api.kinds.prunejob import KIND, PruneJobSpec
from edgeloom_operators.config import OperatorConfig
from edgeloom_operators.render import Placement, RoleJob, children


def render(
    body: dict[str, Any], spec: PruneJobSpec, config: OperatorConfig
) -> list[dict[str, Any]]:
    """Every child of the PruneJob ``body`` (pure)."""
    pruner = KIND.roles[0]
    job = RoleJob(
        pruner.name,
        Placement(pruner.tier, gpus=1 if spec.gpu else 0),
        requests={"cpu": "1", "memory": "4Gi"},
    )
    return children(body, KIND, [job], config)


__all__ = ["KIND", "render"]
