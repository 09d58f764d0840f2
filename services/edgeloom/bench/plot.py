"""The plot helper every benchmark draws with: panels (matplotlib, Agg) saved as PNG, and the
kinds of panel benchmarks draw most (one line per method, a mean and std band per method over
seeds, grouped bars)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MiB = 1024 * 1024


@contextmanager
def panels(
    path: Path,
    count: int,
    panel_size: tuple[float, float] = (5.5, 4.0),
    title: str | None = None,
    dpi: int = 110,
    columns: int | None = None,
) -> Iterator[list[Axes]]:
    """A figure of ``count`` panels, ``columns`` to a row (all in one row by default), saved
    to ``path`` when the block ends; panels of the last row left over are hidden.

    Examples
    --------
    >>> with panels(out / "x.png", 2) as (left, right):  # doctest: +SKIP
    ...     left.plot([0, 1], [0, 1])
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = panel_size
    across = min(count, columns or count)
    down = -(-count // across)
    fig, grid = plt.subplots(down, across, figsize=(width * across, height * down), squeeze=False)
    axes = list(grid.flat)
    for spare in axes[count:]:
        spare.set_visible(False)
    try:
        yield axes[:count]
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def method_lines(
    ax: Axes,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    marker: str | None = None,
    dashed: Sequence[str] = (),
    steps: bool = False,
) -> None:
    """One line per method (``method: (xs, ys)``); methods in ``dashed`` are drawn dashed."""
    for method, (xs, ys) in curves.items():
        ax.plot(
            xs,
            ys,
            "--" if method in dashed else "-",
            marker=marker,
            drawstyle="steps-post" if steps else "default",
            label=method,
        )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def method_bands(
    ax: Axes,
    runs: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    *,
    dashed: Sequence[str] = (),
    points: int = 200,
) -> None:
    """Per method, the mean line and a one-std band over its runs (``method: [(xs, ys), ...]``,
    one pair per seed): each run is interpolated onto ``points`` shared xs up to where the
    shortest run ends, so the band never extrapolates."""
    import numpy as np

    for method, pairs in runs.items():
        start = max(xs[0] for xs, _ in pairs)
        end = min(xs[-1] for xs, _ in pairs)
        grid = np.linspace(start, end, points) if end > start else np.array([end])
        ys = np.array([np.interp(grid, xs, vals) for xs, vals in pairs])
        mean, std = ys.mean(axis=0), ys.std(axis=0)
        (line,) = ax.plot(grid, mean, "--" if method in dashed else "-", label=method)
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def grouped_bars(
    ax: Axes, groups: Sequence[str], bars: Mapping[str, Sequence[float]]
) -> list[tuple[float, float]]:
    """Bars side by side in each group, one series per key of ``bars`` (each with a value per
    group); returns the (x, top) of every bar of the last series, for annotations."""
    width = 0.8 / max(len(bars), 1)
    tops: list[tuple[float, float]] = []
    for k, (label, values) in enumerate(bars.items()):
        xs = [g + (k - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=label)
        tops = list(zip(xs, values, strict=True))
    ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize=8)
    return tops
