"""NATS identities: decentralised JWT auth, one user per role of each job.

edgeloom runs nats-server in *operator mode* (NATS's decentralised auth): an operator key signs
one account, and the account's key signs a user JWT per role of each job, whose claims carry
that role's subject permissions. The server holds only the operator and account JWTs (public,
preloaded through the ``MEMORY`` resolver) and checks every user's JWT signature, permissions
and expiry itself. Why this rather than the alternatives:

- users with permissions in ``nats.conf`` need a config rewrite and reload for every job, and
  the config would hold every job's password;
- auth callout makes the operator a hop on every connect, so an operator restart stalls
  every reconnecting pod;
- with JWTs the operator mints a job's credentials offline, the server needs no reload, and a
  credential is worthless outside its job's subjects and after its expiry.

What a role may do (:func:`role_permissions`): the coordinator (a kind's first role) publishes
its job's ``status`` and ``result`` and commands to the other roles, and subscribes to
``join`` and ``control``; any other role publishes ``join`` and subscribes to its own role's
subjects; every role answers requests it received (``allow_responses``) and subscribes to its
own inbox prefix only; the coordinator alone reaches its job's JetStream buckets, and every
role the buckets its spec names. The operator (and ``edgeloom run``) hold an unrestricted user.

A NATS credential cannot be revoked under the memory resolver without reloading the server,
so user JWTs expire (:data:`DEFAULT_LIFETIME_S`), and a job's subjects and buckets die with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nkeys
from pydantic import BaseModel

from edgeloom.api.artifacts import ObjectRef
from edgeloom.api.jobstate import job_buckets
from edgeloom.api.registry import KindInfo
from edgeloom.runtime.subjects import subject

DEFAULT_LIFETIME_S = 30 * 24 * 3600
"""How long a job's user credentials are valid (the operator mints new ones for new jobs)."""
RESPONSES_MAX = 100_000
"""Messages a role may publish to one request's reply subject (a chunked reply is many)."""
RESPONSES_TTL_S = 600
"""How long after a request its reply subject stays open to the responder."""
ACCOUNT_NAME = "EDGELOOM"
MAX_CONTROL_LINE = 64 * 1024
"""The server's ``max_control_line``: room for a user JWT with many buckets (default 4 KiB)."""

_CREDS = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""
_CREDS_JWT = re.compile(r"-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_seed(prefix: int) -> bytes:
    """A fresh NKEY seed of the given kind (``nkeys.PREFIX_BYTE_ACCOUNT``, ...)."""
    return bytes(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(seed: bytes) -> str:
    """The public NKEY (``O...``, ``A...``, ``U...``) of a seed."""
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def encode_jwt(claims: dict[str, Any], signer_seed: bytes) -> str:
    """A NATS JWT of ``claims`` (``sub``, ``name``, ``nats``, optional ``exp``), issued and
    signed (ed25519) by the key of ``signer_seed``."""
    signer = nkeys.from_seed(bytearray(signer_seed))
    body = {**claims, "iat": int(time.time()), "iss": signer.public_key.decode()}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = _b64(signer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (its signature is the server's to check, not ours)."""
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


def creds_jwt(creds: str) -> str:
    """The user JWT inside a ``.creds`` text."""
    match = _CREDS_JWT.search(creds)
    if match is None:
        raise ValueError("not a NATS credentials file")
    return match.group(1)


@dataclass(frozen=True)
class Permissions:
    """A user's subject permissions; ``None`` lists mean unrestricted (an admin)."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    inbox_prefix: str = "_INBOX"
    """What the client passes as nats-py's ``inbox_prefix`` (its replies arrive below it)."""

    def claims(self) -> dict[str, Any]:
        if self.publish is None or self.subscribe is None:
            return {}
        return {
            "pub": {"allow": sorted(set(self.publish))},
            "sub": {"allow": sorted({*self.subscribe, f"{self.inbox_prefix}.>"})},
            "resp": {"max": RESPONSES_MAX, "ttl": RESPONSES_TTL_S * 1_000_000_000},
        }


ADMIN = Permissions(publish=None, subscribe=None)


def inbox_prefix(namespace: str, kind: str, name: str, role: str) -> str:
    """The inbox prefix of one role of one job: ``_INBOX.<namespace>.<kind>.<name>.<role>``."""
    return "_INBOX" + subject(namespace, kind, name, role).removeprefix("edgeloom")


def kv_permissions(bucket: str) -> list[str]:
    """Create, read and write the KV bucket ``bucket``, and no other."""
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
    ]


def object_store_permissions(bucket: str) -> list[str]:
    """Create, read, write and overwrite objects of the object store ``bucket``, and no other
    (reading an object takes an ordered consumer, hence the consumer subjects)."""
    stream = f"OBJ_{bucket}"
    return [
        "$JS.API.STREAM.NAMES",  # nats-py looks up a subject's stream; names only, no data
        f"$O.{bucket}.>",
        *(f"$JS.API.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "MSG.GET", "PURGE")),
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def role_permissions(
    info: KindInfo, namespace: str, name: str, role: str, buckets: Iterable[str] = ()
) -> Permissions:
    """What ``role`` of the job ``namespace/name`` may publish and subscribe to (see the module
    docstring); ``buckets`` are the object-store buckets its spec names."""
    spec = info.role(role)
    job = subject(namespace, info.kind, name, "x").removesuffix(".x")
    coordinator = info.roles[0].name == role
    publish = [f"{job}.{c}" for c in spec.publishes]
    subscribe = [f"{job}.{c}" for c in spec.subscribes]
    stores = [s for bucket in buckets for s in object_store_permissions(bucket)]
    if coordinator:
        publish += [f"{job}.status", f"{job}.result"]
        publish += [f"{job}.{r.name}.*" for r in info.roles if r.name != role]
        subscribe += [f"{job}.join", f"{job}.control"]
        own = job_buckets(namespace, info.kind, name)
        stores += kv_permissions(own.state) + object_store_permissions(own.checkpoints)
    else:
        publish.append(f"{job}.join")
        subscribe.append(f"{job}.{role}.*")
    return Permissions(
        publish=(*publish, *stores),
        subscribe=tuple(subscribe),
        inbox_prefix=inbox_prefix(namespace, info.kind, name, role),
    )


def object_buckets(value: object) -> set[str]:
    """Every object-store bucket an :class:`~edgeloom.api.artifacts.ObjectRef` in ``value``
    (a spec, walked through its models, lists and mappings) names."""
    if isinstance(value, ObjectRef):
        return {value.bucket}
    if isinstance(value, BaseModel):
        value = [getattr(value, name) for name in type(value).model_fields]
    elif isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return set().union(*(object_buckets(v) for v in value))
    return set()


@dataclass(frozen=True)
class Issuer:
    """Mints user credentials, signed by the account key (all the operator needs to hold)."""

    account_seed: bytes

    def creds(
        self, user: str, permissions: Permissions, lifetime_s: float = DEFAULT_LIFETIME_S
    ) -> str:
        """A ``.creds`` text (user JWT + user seed) for nats-py's ``user_credentials``."""
        seed = new_seed(nkeys.PREFIX_BYTE_USER)
        claims = {
            "sub": public_key(seed),
            "name": user,
            "exp": int(time.time() + lifetime_s),
            "nats": {
                "type": "user",
                "version": 2,
                "subs": -1,
                "data": -1,
                "payload": -1,
                **permissions.claims(),
            },
        }
        return _CREDS.format(jwt=encode_jwt(claims, self.account_seed), seed=seed.decode())


def job_credentials(
    issuer: Issuer,
    info: KindInfo,
    namespace: str,
    name: str,
    spec: object,
    lifetime_s: float = DEFAULT_LIFETIME_S,
) -> dict[str, str]:
    """A fresh ``.creds`` text per role of the job ``namespace/name``, by role name, with the
    permissions of :func:`role_permissions` (and the buckets ``spec`` names)."""
    buckets = object_buckets(spec)
    return {
        role.name: issuer.creds(
            f"{namespace}/{info.singular}/{name}/{role.name}",
            role_permissions(info, namespace, name, role.name, buckets),
            lifetime_s,
        )
        for role in info.roles
    }


@dataclass(frozen=True)
class Authority:
    """An operator, its system account and the one account every edgeloom user lives in."""

    operator_seed: bytes
    account_seed: bytes
    system_seed: bytes

    @classmethod
    def new(cls) -> Authority:
        return cls(
            new_seed(nkeys.PREFIX_BYTE_OPERATOR),
            new_seed(nkeys.PREFIX_BYTE_ACCOUNT),
            new_seed(nkeys.PREFIX_BYTE_ACCOUNT),
        )

    @property
    def issuer(self) -> Issuer:
        return Issuer(self.account_seed)

    def server_config(self) -> dict[str, Any]:
        """The ``nats.conf`` entries (JSON) that make a server trust this authority."""
        unlimited = {
            "subs": -1,
            "data": -1,
            "payload": -1,
            "imports": -1,
            "exports": -1,
            "wildcards": True,
            "conn": -1,
            "leaf": -1,
        }
        jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        account = public_key(self.account_seed)
        system = public_key(self.system_seed)
        operator = {
            "sub": public_key(self.operator_seed),
            "name": "edgeloom",
            "nats": {"type": "operator", "version": 2, "system_account": system},
        }

        def account_jwt(seed: bytes, name: str, limits: dict[str, Any]) -> str:
            claims = {
                "sub": public_key(seed),
                "name": name,
                "nats": {"type": "account", "version": 2, "limits": limits},
            }
            return encode_jwt(claims, self.operator_seed)

        return {
            # a user JWT travels in the CONNECT line; with a few buckets it outgrows 4 KiB
            "max_control_line": MAX_CONTROL_LINE,
            "operator": encode_jwt(operator, self.operator_seed),
            "system_account": system,
            "resolver": "MEMORY",
            "resolver_preload": {
                account: account_jwt(self.account_seed, ACCOUNT_NAME, unlimited | jetstream),
                system: account_jwt(self.system_seed, "SYS", unlimited),
            },
        }
