"""Sweeps: the points of an experiment, the command that trains each one, and their status.

An experiment (experiments/NAME.py) is a config file (it has `get_config()`, so tools/train.py
loads it with --config) plus `points()`: {point name: {dotted config path: value}}. `grid` and
`random_search` build those dicts; each point trains in its own workdir, DIR/<point name>.
No jax here, so printing the commands of a sweep is instant.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import random
import shlex
from types import ModuleType
from typing import Mapping, Sequence

from lm.config import ConfigError

DONE_FILE = "sweep_done.json"  # written when a point's training exited cleanly


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A value drawn log-uniformly from [low, high] (learning rates, weight decay...)."""
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return float(f"{math.exp(rng.uniform(math.log(self.low), math.log(self.high))):.3g}")


@dataclasses.dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return float(f"{rng.uniform(self.low, self.high):.3g}")


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def point_name(overrides: Mapping[str, object]) -> str:
    """e.g. "learning_rate=0.003,warmup_steps=10,seed=0": the last part of each path."""
    return ",".join(f"{path.rsplit('.', 1)[-1]}={_short(value)}" for path, value in overrides.items())


def _with_seeds(points: list[dict], seeds: Sequence[int]) -> dict[str, dict]:
    out = {}
    for overrides, seed in itertools.product(points, seeds):
        point = {**overrides, "train.seed": seed}
        out[point_name(point)] = point
    return out


def grid(axes: Mapping[str, Sequence], seeds: Sequence[int] = (0,)) -> dict[str, dict]:
    """Every combination of the axes' values (first axis slowest), once per seed."""
    paths = list(axes)
    return _with_seeds([dict(zip(paths, values)) for values in itertools.product(*axes.values())], seeds)


def random_search(space: Mapping[str, object], num_points: int, seed: int = 0,
                  seeds: Sequence[int] = (0,)) -> dict[str, dict]:
    """`num_points` draws from `space` (a list: uniform choice; LogUniform or Uniform: a
    number), reproducible from `seed`, each trained once per entry of `seeds`."""
    rng = random.Random(seed)
    draws = []
    for _ in range(num_points):
        draws.append({path: rng.choice(list(values)) if isinstance(values, (list, tuple)) else values.sample(rng)
                      for path, values in space.items()})
    return _with_seeds(draws, seeds)


def load_experiment(path: str) -> ModuleType:
    """Imports experiments/NAME.py from its path. It imports `configs` and `lm` as installed
    packages (`pip install -e .` provides both), as tools/train.py does when it loads the same
    file with --config."""
    if not os.path.isfile(path):
        raise ConfigError(f"experiment {path!r} does not exist: give a file such as experiments/lr_warmup_gpt_tiny.py")
    spec = importlib.util.spec_from_file_location(f"experiment_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("get_config", "points"):
        if not hasattr(module, name):
            raise ConfigError(f"experiment {path} has no {name}(): an experiment is a config file with get_config() "
                              f"plus points() returning {{name: {{dotted.config.path: value}}}}")
    return module


def check_points(experiment: ModuleType) -> dict[str, dict]:
    """The experiment's points, each checked against its config (unknown paths, wrong types,
    invalid values) before anything runs."""
    from lm import config as config_lib  # noqa: PLC0415

    points = experiment.points()
    if not points:
        raise ConfigError("the experiment's points() is empty")
    for name, overrides in points.items():
        if "/" in name or name.startswith("."):
            raise ConfigError(f"point name {name!r} must be usable as a directory name")
        try:
            config_lib.from_config_dict(experiment.get_config(), overrides)
        except ConfigError as error:
            raise ConfigError(f"point {name!r}: {error}") from None
    return points


def _flag_value(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def train_command(experiment_path: str, workdir: str, overrides: Mapping[str, object],
                  python: str = "python") -> list[str]:
    return [python, "tools/train.py", f"--config={experiment_path}", f"--workdir={workdir}",
            *(f"--config.{path}={_flag_value(value)}" for path, value in overrides.items())]


def shell_line(command: Sequence[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def is_done(point_workdir: str) -> bool:
    return os.path.exists(os.path.join(point_workdir, DONE_FILE))


def mark_done(point_workdir: str, overrides: Mapping[str, object], seconds: float) -> None:
    with open(os.path.join(point_workdir, DONE_FILE), "w") as f:
        json.dump({"overrides": dict(overrides), "seconds": round(seconds, 1)}, f, indent=2)
