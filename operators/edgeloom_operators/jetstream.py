"""The operator's NATS connection, and deleting what a run left in JetStream.

A job's coordinator may keep its state in the KV bucket and its checkpoint in the object
store (:mod:`edgeloom.api.jobstate`); a kind whose runs do (its plugin's ``cleanup``) deletes
both with the resource, through a finalizer whose retries are bounded so a NATS outage cannot
block a deletion for long.
"""

from __future__ import annotations

import nats
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from edgeloom.api.jobstate import CHECKPOINT_BUCKET, STATE_BUCKET, checkpoint_name, state_key
from edgeloom_operators.config import OperatorConfig


async def connect(config: OperatorConfig) -> NATS:
    """Connect to the jobs' NATS server; reconnect forever afterwards."""
    return await nats.connect(
        config.nats_url,
        name="edgeloom-operator",
        user=config.nats_user,
        password=config.nats_password,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )


async def delete_run_state(nc: NATS, namespace: str, name: str, run_id: str) -> list[str]:
    """Delete the run's KV state and checkpoint; returns what existed and was deleted."""
    js = nc.jetstream()
    deleted = []
    key = state_key(namespace, name, run_id)
    try:
        kv = await js.key_value(STATE_BUCKET)
        await kv.get(key)
        await kv.purge(key)
        deleted.append(f"{STATE_BUCKET}/{key}")
    except NotFoundError:  # no bucket or no key: nothing to delete
        pass
    obj = checkpoint_name(namespace, name, run_id)
    try:
        store = await js.object_store(CHECKPOINT_BUCKET)
        await store.delete(obj)
        deleted.append(f"{CHECKPOINT_BUCKET}/{obj}")
    except NotFoundError:
        pass
    return deleted
