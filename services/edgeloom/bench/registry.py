"""Which benchmarks exist: ``@benchmark(NAME)`` registers one, and other distributions add
theirs through the ``edgeloom.benchmarks`` entry-point group (the test kit's ``operator``).

Entry points are loaded only when their benchmark is asked for (``edgeloom bench NAME``) or
described (``edgeloom bench -h``), so listing names imports nothing from other distributions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from edgeloom.bench.harness import Benchmark

ENTRY_POINT_GROUP = "edgeloom.benchmarks"
BUILTIN_MODULES = (
    "edgeloom.bench.transport",
    "edgeloom.bench.splittraining",
    "edgeloom.bench.prunejob",
    "edgeloom.bench.hat",
)
"""Modules of the benchmarks shipped with edgeloom; each registers itself when imported."""

PROVIDED_ELSEWHERE = {"operator": "the edgeloom test kit (pip install -e testkit)"}
"""Benchmarks another distribution registers, and what to install for them."""

_REGISTRY: dict[str, type[Benchmark[Any]]] = {}

BenchmarkT = TypeVar("BenchmarkT", bound=type[Benchmark[Any]])


class UnknownBenchmark(LookupError):
    """No benchmark of that name; the message lists the known ones or says what to install."""


def benchmark(name: str) -> Callable[[BenchmarkT], BenchmarkT]:
    """Class decorator: register a :class:`~edgeloom.bench.harness.Benchmark` as ``name``."""

    def register(cls: BenchmarkT) -> BenchmarkT:
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"benchmark {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def builtin_benchmarks() -> list[type[Benchmark[Any]]]:
    """The benchmarks shipped with edgeloom (no entry point loaded), in BUILTIN_MODULES'
    order whatever imported them first."""
    _builtins()
    return sorted(
        (cls for cls in _REGISTRY.values() if cls.__module__ in BUILTIN_MODULES),
        key=lambda cls: BUILTIN_MODULES.index(cls.__module__),
    )


def benchmark_names() -> list[str]:
    """Every benchmark that can run here: the built-in ones, then those of entry points."""
    builtin = [cls.name for cls in builtin_benchmarks()]  # in their modules' order
    return list(dict.fromkeys([*builtin, *_REGISTRY, *_entry_points()]))


def get_benchmark(name: str) -> type[Benchmark[Any]]:
    """The benchmark registered as ``name``, loading its entry point if another distribution
    provides it.

    Raises
    ------
    UnknownBenchmark
        Naming the known benchmarks, or what to install when ``name`` comes from elsewhere.
    """
    _builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    found = _entry_points().get(name)
    if found is not None:
        try:
            found.load()  # the module's @benchmark registers it
        except ImportError as err:
            raise UnknownBenchmark(
                f"benchmark {name!r} ({found.value}) cannot load: {err}"
            ) from err
        if name not in _REGISTRY:
            raise UnknownBenchmark(f"entry point {found.value} registers no benchmark {name!r}")
        return _REGISTRY[name]
    if name in PROVIDED_ELSEWHERE:
        raise UnknownBenchmark(f"benchmark {name!r} needs {PROVIDED_ELSEWHERE[name]}")
    raise UnknownBenchmark(f"unknown benchmark {name!r} (known: {', '.join(benchmark_names())})")


def describe_benchmarks() -> str:
    """One line per benchmark for ``edgeloom bench -h``: name and summary, or what it needs."""
    rows: dict[str, str] = {}
    for name in [*benchmark_names(), *PROVIDED_ELSEWHERE]:
        try:
            doc = get_benchmark(name).__doc__ or ""
            rows[name] = doc.strip().splitlines()[0] if doc.strip() else ""
        except UnknownBenchmark as err:
            rows[name] = str(err)
    width = max(map(len, rows))
    return "\n".join(f"  {name:<{width}}  {summary}" for name, summary in rows.items())
