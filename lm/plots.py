"""Curves people look at: reading a workdir's metrics.jsonl and drawing runs side by side.

metrics.jsonl is appended to across resumes, so a step may appear twice (the steps after the
last checkpoint are redone); the later record wins. matplotlib is imported lazily, with the
Agg backend, so nothing here needs a display.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from lm import metrics


def read_metrics(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """{metric name: [(step, value)] sorted by step}, the last record of each step winning."""
    series: dict[str, dict[int, float]] = {}
    for record in metrics.read_records(workdir):
        record = dict(record)
        step = int(record.pop("step"))
        record.pop("wall_time", None)
        for name, value in record.items():
            series.setdefault(name, {})[step] = float(value)
    return {name: sorted(points.items()) for name, points in series.items()}


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_curves(panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], output: str, title: str = "",
                log_y: Sequence[str] = ()) -> None:
    """One subplot per panel ({panel title: {line label: [(step, value)]}}), saved as a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for axis, (panel, lines) in zip(axes[0], panels.items()):
        for label, points in lines.items():
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, label=label, marker="o" if len(points) < 30 else None, markersize=3)
        axis.set_title(panel)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if panel in log_y:
            axis.set_yscale("log")
        if lines:
            axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def plot_runs(workdirs: Sequence[str], output: str) -> None:
    """Loss (train and validation) and learning rate of each run, one color per run."""
    labels = _labels(workdirs)
    loss, learning_rate = {}, {}
    for workdir, label in zip(workdirs, labels):
        series = read_metrics(workdir)
        if not series:
            raise FileNotFoundError(f"{workdir} has no metrics.jsonl: give workdirs written by tools/train.py")
        loss[f"{label} train"] = series.get("train/loss", [])
        loss[f"{label} validation"] = series.get("eval/loss", [])
        learning_rate[label] = series.get("train/learning_rate", [])
    plot_curves({"loss (nats/token)": loss, "learning rate": learning_rate}, output)


def _labels(workdirs: Sequence[str]) -> list[str]:
    """The shortest distinct labels: the last path component, unless two runs share it."""
    names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    return names if len(set(names)) == len(names) else [os.path.normpath(w) for w in workdirs]
