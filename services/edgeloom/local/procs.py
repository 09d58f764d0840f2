"""Child-process helpers shared by the local runner and the test harness."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def die_with_parent() -> None:
    """``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux), so no
    child outlives the process that started it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
