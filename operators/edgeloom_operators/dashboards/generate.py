"""The chart's dashboards, generated from the kind plugins (``edgeloom dashboards``) and checked
for drift (``edgeloom dashboards --check``, run by ``make lint`` and a unit test).

One JSON file per kind (``<singular>.json``) plus ``operator.json`` in
``charts/edgeloom/dashboards/``, where the chart's ConfigMaps pick them up for Grafana's
dashboard sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgeloom_operators.dashboards.board import kind_board
from edgeloom_operators.dashboards.operator import operator_board

if TYPE_CHECKING:
    from edgeloom_operators.plugin import KindPlugin

DASHBOARD_DIR = Path("charts") / "edgeloom" / "dashboards"
"""Where the generated files live, relative to the repository root."""


def rendered(plugins: Sequence[KindPlugin]) -> dict[str, str]:
    """Every dashboard's JSON text by file name."""
    boards = {f"{p.info.singular}.json": kind_board(p) for p in plugins}
    boards["operator.json"] = operator_board(plugins)
    return {name: json.dumps(board, indent=2) + "\n" for name, board in boards.items()}


def write_dashboards(root: Path, plugins: Sequence[KindPlugin]) -> list[Path]:
    """Write every dashboard under ``root``; generated files of kinds that are gone are
    removed. Returns the files written."""
    directory = root / DASHBOARD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered(plugins)
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def check_dashboards(root: Path, plugins: Sequence[KindPlugin]) -> list[str]:
    """One problem per missing, differing or stale dashboard file under ``root``; empty when
    the committed files are what :func:`write_dashboards` would write."""
    directory = root / DASHBOARD_DIR
    files = rendered(plugins)
    hint = "run `edgeloom dashboards` to regenerate"
    problems = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing; {hint}")
        elif path.read_text() != text:
            problems.append(f"{path}: differs from the generated dashboard; {hint}")
    problems += [
        f"{path}: no kind generates it; {hint}"
        for path in sorted(directory.glob("*.json"))
        if path.name not in files
    ]
    return problems
