"""Benchmarks: ``edgeloom bench NAME`` writes bench/results/NAME.json and a PNG.

A benchmark is a :class:`Benchmark` registered with ``@benchmark(NAME)``; the harness
(:func:`run_benchmark`) picks its cases and methods, runs them and writes the one result shape.
"""

from edgeloom.bench.harness import Benchmark, Case, CaseResult, UnknownSelection, run_benchmark
from edgeloom.bench.registry import (
    UnknownBenchmark,
    benchmark,
    benchmark_names,
    describe_benchmarks,
    get_benchmark,
)
from edgeloom.bench.results import BenchResult

__all__ = [
    "BenchResult",
    "Benchmark",
    "Case",
    "CaseResult",
    "UnknownBenchmark",
    "UnknownSelection",
    "benchmark",
    "benchmark_names",
    "describe_benchmarks",
    "get_benchmark",
    "run_benchmark",
]
