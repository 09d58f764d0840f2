"""Small real jobs and process helpers for integration tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from edgeloom.api.resource import API_VERSION

SMALL_SPLIT_JOB: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "SplitTrainingJob",
    "metadata": {"name": "small"},
    "spec": {
        "method": "mergesfl",
        "model": {"architecture": "digits-cnn"},
        "dataset": {"name": "digits"},
        "partition": {"scheme": "dirichlet", "alpha": 0.5},
        "workers": [
            {"name": "slow", "count": 1, "profile": {"computeSlowdown": 3.0}},
            {"name": "fast", "count": 2},
        ],
        "training": {
            "rounds": 3,
            "iterationsPerRound": 4,
            "totalBatchSize": 48,
            "minBatchSize": 4,
            "maxBatchSize": 32,
            "learningRate": 0.05,
            "momentum": 0.9,
        },
        "participation": {"minWorkers": 1, "roundDeadlineSeconds": 20},
        "checkpointInterval": 1,
    },
}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def write_split_job(directory: Path, name: str = "small", **spec: Any) -> Path:
    """Write a small SplitTrainingJob (digits, 3 workers) with ``spec`` merged in."""
    obj = _merge(SMALL_SPLIT_JOB, {"metadata": {"name": name}, "spec": spec})
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def role_pids(resource: Path, role: str, index: int) -> list[int]:
    """PIDs of ``edgeloom serve`` processes running ``role``/``index`` of ``resource``."""
    want = (
        "\0".join(["--resource", str(resource.resolve()), "--role", role, "--index", str(index)])
        + "\0"
    )
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "\0serve\0" in cmdline and want in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids
