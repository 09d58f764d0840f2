"""Per-role NATS permissions and the operator's minting, without a server (the server side is
tests/integration/test_nats_auth.py)."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from edgeloom.api.kinds.prunejob import PruneJobSpec
from edgeloom.api.registry import kind_info
from edgeloom.runtime.natsauth import (
    Authority,
    creds_jwt,
    decode_claims,
    object_buckets,
    role_permissions,
)
from edgeloom_operators import credentials
from edgeloom_operators.credentials import load_issuer, mint, still_valid
from edgeloom_operators.jetstream import OperatorCreds

SPLIT, PRUNE = kind_info("SplitTrainingJob"), kind_info("PruneJob")
BODY = {"metadata": {"namespace": "ns", "name": "job", "uid": "u-1"}}


def test_the_coordinator_commands_and_reports_and_workers_only_join() -> None:
    server = role_permissions(SPLIT, "ns", "job", "server")
    worker = role_permissions(SPLIT, "ns", "job", "worker")
    job = "edgeloom.ns.splittrainingjob.job"
    assert {f"{job}.status", f"{job}.result", f"{job}.worker.*"} <= set(server.publish or ())
    assert {f"{job}.join", f"{job}.control"} == set(server.subscribe or ())
    assert [p for p in worker.publish or () if p.startswith("edgeloom.")] == [f"{job}.join"]
    assert worker.subscribe == (f"{job}.worker.*",)
    assert not [p for p in worker.publish or () if p.startswith("$")]  # no store at all
    assert server.inbox_prefix != worker.inbox_prefix
    claims = worker.claims()
    assert claims["sub"]["allow"] == sorted([f"{job}.worker.*", f"{worker.inbox_prefix}.>"])
    assert claims["resp"]["max"] > 1  # chunked replies


def test_buckets_a_spec_names_are_granted_and_no_others() -> None:
    spec = PruneJobSpec.model_validate(
        {
            "method": "comp",
            "ratio": 0.2,
            "model": {"objectStore": {"bucket": "models", "name": "llama"}},
            "output": {"objectStore": {"bucket": "pruned", "name": "llama-20"}},
        }
    )
    assert object_buckets(spec) == {"models", "pruned"}
    granted = role_permissions(PRUNE, "ns", "job", "pruner", object_buckets(spec)).publish or ()
    assert "$JS.API.STREAM.INFO.OBJ_models" in granted and "$O.pruned.>" in granted
    assert not [
        p
        for p in granted
        if "OBJ_" in p
        and not p.split("OBJ_")[1].startswith(("models", "pruned", "edgeloom-prunejob-"))
    ]


def test_minted_credentials_are_kept_until_they_near_expiry_or_the_owner_changes() -> None:
    issuer = Authority.new().issuer
    creds = mint(issuer, SPLIT, BODY, None, lifetime_s=3000)
    assert sorted(creds) == ["server.creds", "worker.creds"]
    claims = decode_claims(creds_jwt(creds["worker.creds"]))
    assert claims["name"] == "ns/splittrainingjob/job/worker"
    assert claims["nats"]["pub"]["allow"][0].startswith("edgeloom.ns.splittrainingjob.job")
    secret = {
        "metadata": {"ownerReferences": [{"uid": "u-1"}]},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in creds.items()},
    }
    assert still_valid(secret, SPLIT, "u-1", lifetime_s=3000)
    assert not still_valid(secret, SPLIT, "u-2", lifetime_s=3000)  # an earlier namesake's
    assert not still_valid(secret, SPLIT, "u-1", 3000, now=time.time() + 2500)  # expiring
    assert not still_valid(None, SPLIT, "u-1")
    del secret["data"]["worker.creds"]
    assert not still_valid(secret, SPLIT, "u-1", lifetime_s=3000)


class FakeKube:
    """Secrets in a dict, as the API returns them (data base64-encoded)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.creates = 0

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.creates += 1
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.secrets.setdefault((namespace, name), {"data": encoded})


def test_the_authority_is_created_once_and_then_read() -> None:
    kube = FakeKube()
    first = load_issuer(kube, "edgeloom", "authority", create=True)  # type: ignore[arg-type]
    again = load_issuer(kube, "edgeloom", "authority", create=True)  # type: ignore[arg-type]
    assert first == again and kube.creates == 1
    conf = base64.b64decode(kube.secrets[("edgeloom", "authority")]["data"]["auth.conf"])
    assert b'resolver: "MEMORY"' in conf and b"operator: " in conf
    with pytest.raises(RuntimeError, match=credentials.ACCOUNT_SEED_KEY):
        load_issuer(FakeKube(), "edgeloom", "authority", create=False)  # type: ignore[arg-type]


def test_the_operators_own_user_is_a_private_file_rewritten_whole() -> None:
    creds = OperatorCreds(Authority.new().issuer, lifetime_s=3000)
    first = creds.path.read_text()
    assert creds.path.stat().st_mode & 0o777 == 0o600
    assert decode_claims(creds_jwt(first))["exp"] > time.time() + 2900
    creds.write()
    assert creds.path.read_text() != first and not creds.path.with_suffix(".new").exists()
