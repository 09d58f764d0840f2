"""One pruning run in a process of its own, so its memory and time are its own.

``python -m edgeloom.bench.prune_case SPEC_JSON MODEL_FOLDER`` loads the model and data the way
the PruneJob role does, then measures only the pruning step: wall time, and peak resident
memory above the level reached once the model and calibration data are loaded and every kind
of kernel has run once (:func:`warm_up`). Linux's
resettable high-water mark (``/proc/self/clear_refs``, value 5) gives the exact peak; freed
heap is returned to the kernel first (``malloc_trim``) so the baseline is what is really in use,
and the benchmark runs this with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors leave the
resident set at once.
The figures go to stdout as one JSON object (no pickle crosses the process boundary).
"""

from __future__ import annotations

import ctypes
import gc
import json
import re
import sys
import time
from pathlib import Path

import torch

from edgeloom.api.kinds.prunejob import PruneJobSpec
from edgeloom.apps.comp.inputs import prepare
from edgeloom.apps.comp.methods import run_method

_STATUS = Path("/proc/self/status")


def _kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{_STATUS} has no {field}")
    return int(match.group(1)) * 1024


def warm_up(inputs) -> None:
    """Run every kind of kernel the methods use once (forward, backward, float64 linear
    algebra), so the library code and thread pools they page in are not counted as any one
    method's memory."""
    model = inputs.model
    with torch.enable_grad():
        next(iter(inputs.losses())).backward()
    model.zero_grad(set_to_none=True)
    square = torch.eye(64, dtype=torch.float64) + 0.1
    torch.linalg.solve(square, torch.ones(64, dtype=torch.float64))
    torch.linalg.inv(square)


def settle_memory() -> int:
    """Collect garbage, hand freed heap back, reset the peak; returns the resident bytes."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _kib("VmRSS")


def main(argv: list[str]) -> int:
    spec = PruneJobSpec.model_validate_json(argv[0])
    inputs = prepare(spec, Path(argv[1]))
    warm_up(inputs)
    baseline = settle_memory()
    started = time.perf_counter()
    report = run_method(spec, inputs)
    wall_s = time.perf_counter() - started
    peak = _kib("VmHWM")
    quality = inputs.measure(inputs.model)
    figures = {
        **quality.values,
        "params": sum(p.numel() for p in inputs.model.parameters()),
        "block_params": report.params_after,
        "achieved_ratio": 1 - report.params_after / report.params_before,
        "removed_layers": report.removed_layers,
        "wall_s": wall_s,
        "peak_memory_bytes": peak - baseline,
        "peak_rss_bytes": peak,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
