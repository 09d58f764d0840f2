"""Child-process helpers shared by the local runner and the test harness."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import sys
from pathlib import Path


def venv_executable(name: str, path: str | None = None) -> str | None:
    """``name`` beside this interpreter (a virtualenv's bin: console scripts and binaries
    installed from PyPI), else on ``path`` (default ``$PATH``); None when in neither."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name, path=path)


def die_with_parent() -> None:
    """``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux), so no
    child outlives the process that started it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
