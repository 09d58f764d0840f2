"""What a finished local run shows: a short table and a progress plot."""

from __future__ import annotations

from pathlib import Path

from edgeloom.api.messages import JobResult
from edgeloom.bench.results import RESULTS_DIR, RecordedCase, recorded_cases_of


def format_table(rows: dict[str, object]) -> str:
    """Two aligned columns, numbers rounded for reading."""
    width = max((len(k) for k in rows), default=0)
    lines = []
    for key, value in rows.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}}  {shown}")
    return "\n".join(lines)


def print_summary(result: JobResult, run_dir: Path) -> None:
    """The outcome, the summary table and what the run wrote (only what exists)."""
    outcome = "succeeded" if result.succeeded else "did not succeed"
    print(f"\njob {outcome}: {result.message}" if result.message else f"\njob {outcome}")
    if result.summary:
        print(format_table(result.summary))
    written = [
        f"{p.name}/" if p.is_dir() else p.name
        for p in sorted(run_dir.iterdir())
        if p.is_file() or any(p.iterdir())
    ]
    print(f"results in {run_dir}/ ({', '.join(written)})")


def print_comparison(spec: dict[str, object], results_dir: Path = RESULTS_DIR) -> None:
    """How the recorded benchmarks of this very spec (every method on its settings) compare,
    and the command that measures them again; nothing when no recorded case has this spec."""
    for case in recorded_cases_of(spec, results_dir):
        print(
            f"\nrecorded by `{case.command}` (revision {case.revision}), case {case.case!r}, "
            "the methods measured on this file's settings:"
        )
        print(comparison_table(case))


def comparison_table(case: RecordedCase) -> str:
    """One row per method; the columns are the figures every method has (a multi-seed mean
    where the benchmark gives one, shown without its ``_mean``)."""
    figures = list(case.results.values())
    names = [
        k
        for k, v in figures[0].items()
        if k.endswith("_mean") and all(k in f for f in figures) and not isinstance(v, dict)
    ]
    headers = ["method", *(n.removesuffix("_mean") for n in names)]
    rows = [
        [method, *("never" if f[n] is None else f"{f[n]:.4g}" for n in names)]
        for method, f in case.results.items()
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def write_plot(result: JobResult, path: Path, title: str) -> Path | None:
    """Headline metric against virtual time (and round) from the result's history."""
    rows = [r for r in result.history if r.get(result.metric_name) is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    y = [r[result.metric_name] for r in rows]
    axes[0].plot([r.get("virtual_time_seconds") or 0 for r in rows], y, marker=".")
    axes[0].set_xlabel("virtual time (s)")
    axes[1].plot([r.get("round") or i for i, r in enumerate(rows)], y, marker=".")
    axes[1].set_xlabel("round")
    for ax in axes:
        ax.set_ylabel(result.metric_name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
