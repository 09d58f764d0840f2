"""The benchmark harness: what a benchmark is, and the one loop that runs any of them.

A benchmark names its cases and methods, opens what its cases share (a nats-server, a process
pool, a control plane) as one context manager, runs one case at a time for the chosen methods
and returns each method's raw figures, and plots the finished result. The harness picks the
cases and methods (``--quick``, ``--case``, ``--method``), runs them and writes the one result
shape of :mod:`edgeloom.bench.results`. Benchmarks drive roles through :mod:`edgeloom.bench.jobs`
(the path ``edgeloom run`` takes); they do not call a system's internals.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from edgeloom.bench.results import (
    RESULTS_DIR,
    BenchResult,
    Figures,
    ResultFiles,
    merge_recorded,
    write_results,
)

SessionT = TypeVar("SessionT")


@dataclass(frozen=True)
class Case:
    """One setting every method runs under; ``params`` go to the results as they are."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    """What running one case gives.

    Attributes
    ----------
    results
        Method name to its raw figures (metric names carry their unit; None: never reached).
    params
        Figures of the case itself found while running it (a dense model's quality, the
        server's max payload), merged into the case's params.
    plot_data
        Whatever the plot needs beyond the figures (learning curves), or None: JSON-able, since
        it is recorded with the case.
    """

    results: dict[str, Figures]
    params: dict[str, Any] = field(default_factory=dict)
    plot_data: Any = None


class Benchmark(ABC, Generic[SessionT]):
    """A system against its baselines on the same data, seed and device profiles.

    Subclasses are registered with :func:`edgeloom.bench.registry.benchmark`, which sets
    ``name``; the first line of the class docstring is the summary ``edgeloom bench -h`` shows.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    """The kinds whose system this benchmark measures (the kind contract test wants one per
    kind)."""

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        """Smoke-sized: fewer cases, methods, rounds or samples (the CI smoke)."""

    @abstractmethod
    def cases(self) -> list[Case]:
        """Every case of this run (``quick`` decides how many)."""

    @abstractmethod
    def methods(self) -> list[str]:
        """Every method of this run, the system first, then its baselines."""

    @abstractmethod
    def session(self) -> AbstractContextManager[SessionT]:
        """What every case shares, started once and stopped after the last case."""

    @abstractmethod
    def run_case(self, case: Case, methods: Sequence[str], session: SessionT) -> CaseResult:
        """Run ``methods`` under ``case``; figures for exactly those methods."""

    @abstractmethod
    def plot(self, result: BenchResult, path: Path) -> None:
        """Draw ``result`` (each case's ``CaseResult.plot_data`` is its ``plot_data``) to
        ``path``."""


class UnknownSelection(ValueError):
    """A ``--case`` or ``--method`` the benchmark does not have; names the known ones."""


def select(kind: str, known: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """``wanted`` in the benchmark's order, or every known name when nothing is wanted."""
    if not wanted:
        return list(known)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UnknownSelection(
            f"unknown {kind} {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        )
    return [k for k in known if k in wanted]


def command_line(
    name: str,
    quick: bool = False,
    cases: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> str:
    """The ``edgeloom bench`` command that reproduces a run (recorded in its results)."""
    words = ["edgeloom", "bench", name, *(["--quick"] if quick else [])]
    words += [w for c in cases or () for w in ("--case", c)]
    words += [w for m in methods or () for w in ("--method", m)]
    return " ".join(words)


def run_benchmark(
    bench: Benchmark[Any],
    out_dir: Path = RESULTS_DIR,
    cases: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[BenchResult, ResultFiles]:
    """Run the chosen cases and methods (all by default) and write JSON and PNG to ``out_dir``.

    A run of chosen cases (``--case``, not ``--quick``) keeps the other cases already recorded
    in ``out_dir`` and replaces the chosen ones, so a long benchmark can be run case by case.

    Raises
    ------
    UnknownSelection
        Before anything starts, for a case or method the benchmark does not have.
    """
    all_cases = {c.name: c for c in bench.cases()}
    chosen_cases = [all_cases[c] for c in select("case", list(all_cases), cases)]
    chosen_methods = select("method", bench.methods(), methods)
    result = BenchResult(bench.name, command_line(bench.name, bench.quick, cases, methods))
    with bench.session() as session:
        for number, case in enumerate(chosen_cases, 1):
            print(
                f"[{number}/{len(chosen_cases)}] {bench.name} {case.name}: "
                f"{', '.join(chosen_methods)}",
                file=sys.stderr,
                flush=True,
            )
            ran = bench.run_case(case, chosen_methods, session)
            if set(ran.results) != set(chosen_methods):
                raise RuntimeError(
                    f"{bench.name} {case.name} gave figures for {sorted(ran.results)}, "
                    f"not {chosen_methods}"
                )
            results = {m: ran.results[m] for m in chosen_methods}
            result.add_case(case.name, {**case.params, **ran.params}, results, ran.plot_data)
    if cases and not bench.quick:
        merge_recorded(result, out_dir / f"{bench.name}.json", list(all_cases))
    files = write_results(result, out_dir, bench.plot)
    return result, files
