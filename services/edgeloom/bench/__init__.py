"""Benchmarks: ``edgeloom bench NAME`` writes bench/results/NAME.json and a PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgeloom.bench.results import BenchResult


def _transport(quick: bool, out_dir: Path) -> BenchResult:
    from edgeloom.bench import transport

    return transport.run(quick=quick, out_dir=out_dir)


def _splittraining(quick: bool, out_dir: Path) -> BenchResult:
    from edgeloom.bench import splittraining

    return splittraining.run(quick=quick, out_dir=out_dir)


def _prunejob(quick: bool, out_dir: Path) -> BenchResult:
    from edgeloom.bench import prunejob

    return prunejob.run(quick=quick, out_dir=out_dir)


def _operator(quick: bool, out_dir: Path) -> BenchResult:
    from edgeloom.bench import operator

    return operator.run(quick=quick, out_dir=out_dir)


BENCHMARKS: dict[str, Callable[..., BenchResult]] = {
    "transport": _transport,
    "splittraining": _splittraining,
    "prunejob": _prunejob,
    "operator": _operator,
}
