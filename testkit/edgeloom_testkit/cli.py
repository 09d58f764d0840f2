"""The ``edgeloom`` command as a user runs it, for tests that go through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EDGELOOM = [sys.executable, "-m", "edgeloom.cli.main"]
"""The command line of ``edgeloom`` in this interpreter's environment."""


def edgeloom_run(
    job: Path, runs_dir: Path, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``edgeloom run JOB --runs-dir RUNS_DIR ARGS...``, its output captured as text."""
    return subprocess.run(
        [*EDGELOOM, "run", str(job), "--runs-dir", str(runs_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
