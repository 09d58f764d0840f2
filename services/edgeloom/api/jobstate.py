"""Where jobs keep state in JetStream, named in one place for the roles that write it and the
operator that deletes it with the resource.

A run is identified by ``(namespace, name, run_id)``; in Kubernetes the run id is the
resource's uid, so a restarted pod finds its own run and a re-created resource starts fresh.
"""

from __future__ import annotations

STATE_BUCKET = "edgeloom-jobs"
"""KV bucket of coordinator state (round, assignments, ...), one key per run."""
CHECKPOINT_BUCKET = "edgeloom-checkpoints"
"""Object-store bucket of model checkpoints, one object per run."""


def state_key(namespace: str, name: str, run_id: str) -> str:
    """KV key of a run's state: ``<namespace>.<name>.<run_id>``."""
    return f"{namespace}.{name}.{run_id}"


def checkpoint_name(namespace: str, name: str, run_id: str) -> str:
    """Object name of a run's checkpoint: ``<namespace>/<name>/<run_id>``."""
    return f"{namespace}/{name}/{run_id}"
