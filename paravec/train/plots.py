"""PNG curves drawn from a run's history (headless: matplotlib's Agg canvas, no pyplot).

- :func:`plot_run` draws one PNG per scalar group of a history (``loss.png`` with a panel
  per loss term, ``paths.png`` for the path cosine similarity, ``lr.png``, ``eval.png`` when
  the run was evaluated, ``mim.png``, ``perf.png``...; see :mod:`paravec.train.monitor` for
  the names) into ``plots/``.
- :func:`plot_comparison` draws one scalar of several runs on one axes: the paper's Fig. 3
  left (``loss/infonce`` of the baseline vs PDF) and right (``paths/cosine_similarity`` with
  vs without MIM)::

      plot_comparison({"baseline": read_history(a), "PDF": read_history(b)},
                      "loss/infonce", "plots/loss-vs-baseline.png", smoothing=0.9)

``smoothing`` in [0, 1) is the weight of TensorBoard-style exponential smoothing (debiased);
when it is above 0 the raw curve stays visible, faint, under the smoothed one. Sparse series
(20 points or fewer, such as evaluation scores) are measurements, not noisy per-step
estimates: they are drawn as dots and never smoothed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

History = Sequence[Mapping[str, Any]]
Series = tuple[list[int], list[float]]

_PANEL_SIZE = (4.2, 3.0)  # inches per subplot
_MAX_COLUMNS = 3
_DPI = 110
_SPARSE = 20  # series with at most this many points (evaluations) are drawn as dots, unsmoothed


def collect_series(history: History) -> dict[str, Series]:
    """``{scalar: (steps, values)}`` from history entries, in step order, nulls left out."""
    points: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        step = entry["step"]
        for key, value in entry.items():
            if key in ("step", "time") or value is None or not math.isfinite(value):
                continue
            points.setdefault(key, []).append((step, float(value)))
    series = {}
    for key, pairs in points.items():
        pairs.sort(key=lambda pair: pair[0])
        series[key] = ([s for s, _ in pairs], [v for _, v in pairs])
    return series


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing slider)."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    smoothed, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**count))
    return smoothed


def plot_run(history: History, out_dir: str | os.PathLike[str], *, smoothing: float = 0.0) -> list[Path]:
    """One PNG per scalar group (the part of a name before ``/``); returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict[str, Series]] = {}
    for key, series in collect_series(history).items():
        group = key.split("/", 1)[0] if "/" in key else "other"
        groups.setdefault(group, {})[key] = series
    written = []
    for group, members in sorted(groups.items()):
        path = out_dir / f"{group}.png"
        _draw_panels(members, path, title=group, smoothing=smoothing)
        written.append(path)
    return written


def plot_comparison(
    histories: Mapping[str, History],
    key: str,
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
    ylabel: str | None = None,
    smoothing: float = 0.0,
) -> Path:
    """Scalar ``key`` of several runs (``{label: history}``) on one axes."""
    runs = {label: collect_series(history).get(key) for label, history in histories.items()}
    missing = [label for label, series in runs.items() if series is None]
    if missing:
        raise ValueError(f"no {key!r} values in the history of: {', '.join(missing)}")
    figure = Figure(figsize=(6.4, 4.2), dpi=_DPI)
    axes = figure.add_subplot()
    for index, (label, (steps, values)) in enumerate(runs.items()):
        _draw_curve(axes, steps, values, color=f"C{index}", label=label, smoothing=smoothing)
    axes.set_title(title or key)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel or key)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def _draw_panels(members: Mapping[str, Series], path: Path, *, title: str, smoothing: float = 0.0) -> None:
    columns = min(len(members), _MAX_COLUMNS)
    rows = math.ceil(len(members) / columns)
    figure = Figure(figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows + 0.4), dpi=_DPI)
    figure.suptitle(title)
    for index, (key, (steps, values)) in enumerate(members.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        _draw_curve(axes, steps, values, color="C0", label=None, smoothing=smoothing)
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def _draw_curve(axes: Any, steps: list[int], values: list[float], *, color: str, label: str | None,
                smoothing: float) -> None:
    sparse = len(steps) <= _SPARSE
    if smoothing > 0 and not sparse:
        axes.plot(steps, values, color=color, alpha=0.25, linewidth=1)
        axes.plot(steps, smooth(values, smoothing), color=color, label=label, linewidth=1.8)
    else:
        axes.plot(steps, values, color=color, label=label, linewidth=1.5, marker="o" if sparse else None)
