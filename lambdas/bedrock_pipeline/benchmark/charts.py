"""Trend charts (PNG) of one metric across recent runs, rendered with matplotlib's Agg backend.

matplotlib is imported lazily: it is in the development environment but optional in the Lambda
bundle; without it the benchmark still runs and records why no chart was logged.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed here."""


@dataclass(frozen=True)
class TrendPoint:
    label: str  # the run's start time, e.g. "11-28 12:53"
    value: float
    regressed: bool = False


def render_trend_png(
    title: str,
    metric: str,
    points: Sequence[TrendPoint],
    *,
    baseline: float | None = None,
    limit: float | None = None,
) -> bytes:
    """One line chart, oldest run first; the current run is the last point. Returns PNG bytes."""
    # Lambda's home is read-only; matplotlib caches fonts under MPLCONFIGDIR, /tmp is writable.
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on Lambda or in CI
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartsUnavailable("matplotlib is not installed") from exc

    # Figure() rather than pyplot: no global state, safe when several runs render at once.
    figure = Figure(figsize=(8, 3.6), dpi=100)
    figure.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.28)  # fixed: layout engines cost ~2x
    axes = figure.subplots()
    xs = list(range(len(points)))
    axes.plot(xs, [p.value for p in points], marker="o", color="#1f77b4", label=metric)
    bad = [(x, p.value) for x, p in zip(xs, points, strict=True) if p.regressed]
    if bad:
        axes.scatter(*zip(*bad, strict=True), color="#d62728", zorder=3, s=60, label="regression")
    if baseline is not None:
        axes.axhline(baseline, color="#7f7f7f", linestyle="--", linewidth=1, label="baseline (median)")
    if limit is not None:
        axes.axhline(limit, color="#d62728", linestyle=":", linewidth=1, label="threshold")
    axes.set_xticks(xs, [p.label for p in points], rotation=45, ha="right", fontsize=7)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(metric)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
