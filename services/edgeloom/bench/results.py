"""The one results shape every benchmark writes (DESIGN.md, Testing tiers), and its writer.

``{"benchmark", "revision", "command", "cases": [{"case", "revision", "command", "params",
"results": {method: {metric_with_unit: value | null}}, "plot_data"?}]}``: metric names carry
their unit (``_s``, ``_bytes``, ``_bytes_per_s``, ratios 0-1), ``null`` means never reached, and
figures are raw. Each case names the run that measured it: a run of some cases (``--case``)
keeps the file's other cases as they were recorded (:func:`merge_recorded`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench/results")

Figures = dict[str, Any]
"""One method's figures in one case: metric name (with its unit) to value."""


def git_revision() -> str:
    """``git rev-parse --short HEAD`` of the working directory, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class BenchResult:
    """A benchmark run: cases, each with params and per-method figures."""

    benchmark: str
    command: str
    cases: list[dict[str, Any]] = field(default_factory=list)
    revision: str = field(default_factory=git_revision)

    def add_case(
        self,
        case: str,
        params: dict[str, Any],
        results: dict[str, Figures],
        plot_data: Any = None,
    ) -> None:
        """One measured case; ``plot_data`` (JSON-able) is kept beside it so a later run of
        other cases can redraw it."""
        entry = {
            "case": case,
            "revision": self.revision,
            "command": self.command,
            "params": params,
            "results": results,
        }
        self.cases.append(entry | ({} if plot_data is None else {"plot_data": plot_data}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "revision": self.revision,
            "command": self.command,
            "cases": self.cases,
        }


def merge_recorded(result: BenchResult, path: Path, order: list[str]) -> None:
    """Add to ``result`` the cases recorded in ``path`` that it did not rerun, as they were
    recorded (their own command and revision), and put every case in ``order``. A missing or
    unreadable file, one of another benchmark, and a smoke run's cases (``--quick``) add
    nothing."""
    try:
        recorded = json.loads(path.read_text())
        kept = [] if recorded["benchmark"] != result.benchmark else list(recorded["cases"])
    except (OSError, ValueError, KeyError, TypeError):
        kept = []
    ran = {c["case"] for c in result.cases}
    for case in kept:
        case.setdefault("revision", recorded["revision"])
        case.setdefault("command", recorded["command"])
        quick = "--quick" in case["command"].split()
        if case.get("case") in order and case["case"] not in ran and not quick:
            result.cases.append(case)
    result.cases.sort(key=lambda c: order.index(c["case"]))


@dataclass(frozen=True)
class ResultFiles:
    """Where a run's figures went."""

    json: Path
    png: Path


def write_results(
    result: BenchResult, out_dir: Path, plot: Callable[[BenchResult, Path], None]
) -> ResultFiles:
    """Write ``OUT_DIR/NAME.json`` and, through ``plot``, ``OUT_DIR/NAME.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ResultFiles(out_dir / f"{result.benchmark}.json", out_dir / f"{result.benchmark}.png")
    files.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot(result, files.png)
    return files


@dataclass(frozen=True)
class RecordedCase:
    """One case of a recorded benchmark run, with where it came from."""

    command: str
    revision: str
    case: str
    results: dict[str, Figures]


def recorded_cases_of(spec: dict[str, Any], results_dir: Path = RESULTS_DIR) -> list[RecordedCase]:
    """The recorded cases (``RESULTS_DIR/*.json``) benchmarked on ``spec``: those whose
    ``params.spec`` equals it, ``method`` aside (every method of the case ran on it).

    ``spec`` is the validated spec as :func:`comparable_spec` gives it, so a file's formatting
    does not matter; a changed setting matches nothing. Unreadable files are skipped.
    """
    wanted = comparable_spec(spec)
    found = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            recorded = json.loads(path.read_text())
            cases = [c for c in recorded["cases"] if c["params"].get("spec") == wanted]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        found += [
            RecordedCase(
                c.get("command", recorded["command"]),
                c.get("revision", recorded["revision"]),
                c["case"],
                c["results"],
            )
            for c in cases
        ]
    return found


def comparable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (JSON form) without ``method``: what a benchmark records as a case's
    ``params.spec`` when it runs every method on one resource file's settings."""
    return {k: v for k, v in spec.items() if k != "method"}
