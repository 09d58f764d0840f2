"""The README's first command, run as written in a fresh clone with a fresh virtualenv.

(The second, ``make test``, is what CI runs on a clean checkout, so CI proves it.) This is the
one test that reaches beyond loopback: the README's set-up step installs from the package
registry, and proving that step is the point.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1800)
def test_make_run_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "edgeloom"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(
        ["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "job succeeded" in proc.stdout
    result = json.loads((clone / "runs" / "mnist1d-mergesfl" / "result.json").read_text())
    assert result["summary"]["method"] == "mergesfl"
    assert result["summary"]["time_to_target_s"] is not None  # the first run reaches its target
    assert "recorded by `edgeloom bench splittraining" in proc.stdout  # and compares
    assert len(result["history"]) >= 1
    assert (clone / "runs" / "mnist1d-mergesfl" / "progress.png").exists()
    assert (clone / ".venv" / "bin" / "edgeloom").exists()  # made by make, not borrowed
