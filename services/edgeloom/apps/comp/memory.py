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


class StepPeak:
    """Measures one step's peak resident memory above the level when it was created;
    :meth:`bytes` is None where the platform has no resettable high-water mark."""

    def __init__(self) -> None:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            _CLEAR_REFS.write_text("5")
            self._baseline: int | None = _bytes("VmRSS")
        except OSError:
            self._baseline = None

    def bytes(self) -> int | None:
        """Peak resident bytes since creation, above the baseline."""
        if self._baseline is None:
            return None
        return _bytes("VmHWM") - self._baseline
