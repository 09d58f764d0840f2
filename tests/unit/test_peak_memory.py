"""The pruner's memory figures: a step's own peak, and the process's since it started."""

from __future__ import annotations

import subprocess
import sys

from edgeloom.apps.comp.memory import PeakMemory

MiB = 1024 * 1024


def test_a_step_counts_what_it_allocates_above_what_was_in_use() -> None:
    held = bytearray(64 * MiB)  # in use before the step: not the step's
    memory = PeakMemory()
    memory.start_step()
    step = bytearray(32 * MiB)
    step[::4096] = b"x" * len(step[::4096])  # touch every page
    used = memory.step_bytes()
    assert used is not None and 30 * MiB < used < 48 * MiB
    assert memory.process_bytes() >= used + len(held)


CHILD = (
    "import resource; from edgeloom.apps.comp.memory import PeakMemory; "
    "print(PeakMemory().process_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
)
PARENT = (
    "import subprocess, sys; big = bytearray(2 * 2**30); "
    "big[::4096] = b'x' * (len(big) // 4096); "
    f"print(subprocess.run([sys.executable, '-c', {CHILD!r}], capture_output=True, text=True, "
    "check=True).stdout)"
)


def test_a_role_started_by_a_large_process_does_not_report_its_parents_peak() -> None:
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, check=True)
    ours, rusage = map(int, out.stdout.split())
    assert rusage >= 2048 * MiB  # getrusage carries the parent's peak over the exec
    assert ours < 2048 * MiB  # VmHWM starts afresh (the child's imports alone are less)
