"""The peak memory of the pruning step alone, above the loaded model and data.

Linux's resettable high-water mark (``/proc/self/clear_refs``, value 5) gives the exact peak
resident set since the reset. Before resetting it, every kind of kernel the methods use runs
once (forward, backward, float64 linear algebra), so the library code and thread pools they
page in are not counted as any one method's memory, and freed heap goes back to the kernel
(``malloc_trim``), so the baseline is what is really in use. Run the role with
``MALLOC_MMAP_THRESHOLD_=65536`` and freed tensors leave the resident set at once.
"""

from __future__ import annotations

import ctypes
import gc
import re
import resource
from pathlib import Path

import torch

from edgeloom.apps.comp.inputs import PruneInputs

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _bytes(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{_STATUS} has no {field}")
    return int(match.group(1)) * 1024


def warm_up(inputs: PruneInputs) -> None:
    """One backward pass and one float64 solve and inverse, gradients dropped after."""
    with torch.enable_grad():
        next(iter(inputs.losses())).backward()
    inputs.model.zero_grad(set_to_none=True)
    square = torch.eye(64, dtype=torch.float64) + 0.1
    torch.linalg.solve(square, torch.ones(64, dtype=torch.float64))
    torch.linalg.inv(square)


class PeakMemory:
    """Peak resident memory of this process, and of one step within it.

    The process figure is Linux's ``VmHWM``, which starts afresh at ``exec``; getrusage's
    ``ru_maxrss`` carries the parent's peak over an exec, so a role started by a large process
    would report that process's peak. Where ``/proc`` has no such fields, ``ru_maxrss``.
    """

    def __init__(self) -> None:
        self._earlier = 0
        self._baseline: int | None = None

    def start_step(self) -> None:
        """Reset the high-water mark; the step's peak counts from the memory in use now."""
        gc.collect()
        try:
            self._earlier = max(self._earlier, _bytes("VmHWM"))
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            _CLEAR_REFS.write_text("5")
            self._baseline = _bytes("VmRSS")
        except OSError:
            self._baseline = None

    def step_bytes(self) -> int | None:
        """Peak resident bytes since :meth:`start_step`, above what was in use then; None
        where the platform has no resettable high-water mark."""
        if self._baseline is None:
            return None
        return _bytes("VmHWM") - self._baseline

    def process_bytes(self) -> int:
        """Peak resident bytes of this process since it started."""
        try:
            return max(self._earlier, _bytes("VmHWM"))
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
