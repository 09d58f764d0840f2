"""The plot helper every benchmark draws with: a row of panels (matplotlib, Agg) saved as PNG,
and the two kinds of panel benchmarks draw most (one line per method, grouped bars)."""

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
) -> Iterator[list[Axes]]:
    """A figure of ``count`` panels side by side, saved to ``path`` when the block ends.

    Examples
    --------
    >>> with panels(out / "x.png", 2) as (left, right):  # doctest: +SKIP
    ...     left.plot([0, 1], [0, 1])
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = panel_size
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    try:
        yield list(axes[0])
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
