"""Child-process helpers shared by the local runner and the test harness."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a foreground command as Ctrl-C (SIGINT) does: a service manager's stop,
``kill``, a closed terminal."""


def venv_executable(name: str, path: str | None = None) -> str | None:
    """``name`` beside this interpreter (a virtualenv's bin: console scripts and binaries
    installed from PyPI), else on ``path`` (default ``$PATH``); None when in neither."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name, path=path)


def die_with_parent() -> None:
    """``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux), so no
    child outlives the process that started it, even one killed by SIGKILL.

    Linux sends it when the *thread* that started the child exits: start long-lived children
    from the main thread (or one that lives as long as they should)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def interrupt_on_stop_signals() -> Iterator[list[int]]:
    """Within the block, :data:`STOP_SIGNALS` interrupt the main thread as SIGINT does.

    The signal is handed to the current SIGINT handler: inside ``asyncio.run`` that cancels the
    main task, so its ``finally`` blocks stop what it started, and ``KeyboardInterrupt`` then
    unwinds the caller's context managers; elsewhere (or when SIGINT is ignored, as in a
    background job) ``KeyboardInterrupt`` is raised at once. Yields the list of stop signals
    received, so the caller can exit with 128 + the signal. Main thread only.
    """
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        on_sigint = signal.getsignal(signal.SIGINT)
        if not callable(on_sigint):
            raise KeyboardInterrupt
        on_sigint(signal.SIGINT, frame)

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
