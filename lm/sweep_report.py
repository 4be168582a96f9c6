"""The results of a sweep: a table (markdown and CSV) and a plot of the validation curves.

Per point: the swept values, its status, the last step logged, final and best value of every
validation metric (best is the lowest, or the highest for accuracies), the median training
tokens/s, and the wall time of its training when it finished.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from typing import Mapping

from lm import plots, sweep


def _best(name: str, values: list[float]) -> float:
    return max(values) if "accuracy" in name else min(values)


def summarize(point_workdir: str, overrides: Mapping[str, object]) -> dict[str, object]:
    series = plots.read_metrics(point_workdir)
    row: dict[str, object] = {path: value for path, value in overrides.items()}
    done = sweep.is_done(point_workdir)
    row["status"] = "done" if done else ("partial" if os.path.isdir(point_workdir) else "not started")
    steps = [step for points in series.values() for step, _ in points]
    row["steps"] = max(steps) if steps else 0
    for name in sorted((n for n in series if n.startswith("eval/")), key=lambda n: (n != "eval/loss", n)):
        values = [value for _, value in series[name] if math.isfinite(value)]
        short = name.split("/", 1)[1]
        row[f"final {short}"] = series[name][-1][1]
        row[f"best {short}"] = _best(name, values) if values else math.nan
    speeds = [value for _, value in series.get("train/tokens_per_sec", [])]
    row["tokens/s"] = statistics.median(speeds) if speeds else math.nan
    if done:
        with open(os.path.join(point_workdir, sweep.DONE_FILE)) as f:
            row["seconds"] = json.load(f).get("seconds", math.nan)
    return row


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def write(sweep_workdir: str, points: Mapping[str, Mapping[str, object]], title: str = "") -> dict[str, str]:
    """Writes results.md, results.csv and validation.png into `sweep_workdir`; returns their paths."""
    rows = [{"point": name, **summarize(os.path.join(sweep_workdir, name), overrides)}
            for name, overrides in points.items()]
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    paths = {kind: os.path.join(sweep_workdir, f"results.{kind}") for kind in ("md", "csv")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c, "")) for c in columns) + " |" for row in rows]
    with open(paths["md"], "w") as f:
        f.write((f"# {title}\n\n" if title else "") + "\n".join(lines) + "\n")
    curves = {name: plots.read_metrics(os.path.join(sweep_workdir, name)) for name in points}
    panels = {"validation loss (nats/token)": {n: c.get("eval/loss", []) for n, c in curves.items()}}
    if any("eval/bits_per_byte" in c for c in curves.values()):
        panels["validation bits per byte"] = {n: c.get("eval/bits_per_byte", []) for n, c in curves.items()}
    paths["png"] = os.path.join(sweep_workdir, "validation.png")
    plots.plot_curves(panels, paths["png"], title)
    return paths
