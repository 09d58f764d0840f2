"""Each job's NATS identities, minted by the operator and kept in the job's Secret.

The account key that signs them lives in the *authority* Secret in the operator's namespace
(:func:`load_issuer`): given by the NATS admin for an external server, or created by the
operator on first start for the chart's own NATS, which mounts its public part
(``auth.conf``: the operator and account JWTs) and waits for it. A job's Secret holds one
``<role>.creds`` per role (:func:`edgeloom.runtime.natsauth.role_permissions`), the NATS URL
and the CA; pods mount only their own role's file. New credentials are minted when the Secret is
missing, belongs to an earlier resource of the same name, lacks a role, or expires within a
third of its lifetime; the Secret is owned by the resource, so it goes with it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

from edgeloom.api.registry import KindInfo
from edgeloom.runtime.natsauth import (
    DEFAULT_LIFETIME_S,
    Authority,
    Issuer,
    creds_jwt,
    decode_claims,
    job_credentials,
)
from edgeloom_operators.kube import Kube
from edgeloom_operators.render import creds_key

ACCOUNT_SEED_KEY = "account.nk"
SERVER_CONFIG_KEY = "auth.conf"


def mint(
    issuer: Issuer, info: KindInfo, body: Mapping[str, Any], spec: Any, lifetime_s: float
) -> dict[str, str]:
    """A fresh ``.creds`` text per role of the resource ``body`` (by :func:`creds_key`)."""
    meta = body["metadata"]
    creds = job_credentials(issuer, info, meta["namespace"], meta["name"], spec, lifetime_s)
    return {creds_key(role): text for role, text in creds.items()}


def still_valid(
    secret: Mapping[str, Any] | None,
    info: KindInfo,
    uid: str,
    lifetime_s: float = DEFAULT_LIFETIME_S,
    now: float | None = None,
) -> bool:
    """Whether a job's existing Secret (as read from the API) can be kept: owned by this very
    resource, with every role's credentials, none expiring within a third of ``lifetime_s``."""
    if secret is None:
        return False
    owners = secret.get("metadata", {}).get("ownerReferences") or []
    if not any(o.get("uid") == uid for o in owners):
        return False
    data = secret.get("data") or {}
    horizon = (time.time() if now is None else now) + lifetime_s / 3
    for role in info.roles:
        encoded = data.get(creds_key(role.name))
        if encoded is None:
            return False
        try:
            claims = decode_claims(creds_jwt(base64.b64decode(encoded).decode()))
        except (ValueError, json.JSONDecodeError):
            return False
        if claims.get("exp", 0) < horizon:
            return False
    return True


def load_issuer(kube: Kube, namespace: str, name: str, create: bool) -> Issuer:
    """The account key from the authority Secret ``namespace/name``; with ``create``, a new
    authority is generated and stored there when the Secret does not exist yet.

    Raises
    ------
    RuntimeError
        When the Secret (or its account key) is missing and may not be created.
    """
    secret = kube.get_secret(namespace, name)
    if secret is None and create:
        kube.create_secret(namespace, name, authority_secret_data(Authority.new()))
        secret = kube.get_secret(namespace, name)  # ours, or a concurrent creator's
    data = (secret or {}).get("data") or {}
    if ACCOUNT_SEED_KEY not in data:
        raise RuntimeError(
            f"Secret {namespace}/{name} with key {ACCOUNT_SEED_KEY} (the NATS account's seed "
            "that signs job credentials) is missing"
        )
    return Issuer(base64.b64decode(data[ACCOUNT_SEED_KEY]))


def authority_secret_data(authority: Authority) -> dict[str, str]:
    """The authority Secret's keys: the seeds, and ``auth.conf`` for nats-server."""
    return {
        "operator.nk": authority.operator_seed.decode(),
        ACCOUNT_SEED_KEY: authority.account_seed.decode(),
        "system.nk": authority.system_seed.decode(),
        SERVER_CONFIG_KEY: server_config_text(authority),
    }


def server_config_text(authority: Authority) -> str:
    """``auth.conf``, included by the chart's ``nats.conf`` (JSON values are valid there)."""
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in authority.server_config().items())
