"""The one results shape every benchmark writes (DESIGN.md, Testing tiers)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench/results")


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class BenchResult:
    """A benchmark run: cases, each with params and per-method metrics."""

    benchmark: str
    command: str
    cases: list[dict[str, Any]] = field(default_factory=list)

    def add_case(
        self, case: str, params: dict[str, Any], results: dict[str, dict[str, Any]]
    ) -> None:
        self.cases.append({"case": case, "params": params, "results": results})

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "revision": git_revision(),
            "command": self.command,
            "cases": self.cases,
        }

    def write(self, out_dir: Path = RESULTS_DIR) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.benchmark}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path
