"""Repository-wide contracts: layer rules and generated files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_layer_rules_hold() -> None:
    proc = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
    for contract in ("the operator needs no torch", "only edgeloom_operators.kube talks"):
        assert contract in proc.stdout, f"contract missing: {contract}"


def test_committed_crds_match_the_api_models() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeloom.cli.main", "crds", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
