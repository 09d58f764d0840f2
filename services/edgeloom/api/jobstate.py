"""Where jobs keep state in JetStream, named in one place for the roles that write it, the
operator that grants access to it and deletes it with the resource.

Each job has buckets of its own (one KV bucket of coordinator state, one object-store bucket of
checkpoints), so a job's NATS identity can be granted exactly its own stores: NATS permissions
are per subject, and an object store's chunks cannot be told apart by subject. A run is
identified by its run id inside the job's buckets; in Kubernetes the run id is the resource's
uid, so a restarted pod finds its own run and a re-created resource starts fresh.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class JobBuckets:
    """The JetStream buckets of one job."""

    state: str
    """KV bucket of coordinator state (round, assignments, ...), one key per run."""
    checkpoints: str
    """Object-store bucket of model checkpoints, one object per run."""

    @property
    def all(self) -> tuple[str, str]:
        return (self.state, self.checkpoints)


def job_buckets(namespace: str, kind: str, name: str) -> JobBuckets:
    """``edgeloom-<kind>-<digest>-state`` and ``...-checkpoints``: the digest of namespace and
    name keeps the names short and valid (bucket names allow no dots) whatever the job is
    called."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]
    base = f"edgeloom-{kind.lower()}-{digest}"
    return JobBuckets(state=f"{base}-state", checkpoints=f"{base}-checkpoints")
