"""Sweeps: points from grids and random search, launch commands, and a real two-point sweep
that is killed after its first point and rerun (the finished point is skipped)."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from lm import sweep
from lm.config import ConfigError

TINY = "tests/data/sweep_tiny.py"


def test_grid_and_random_search_points():
    points = sweep.grid({"optimizer.learning_rate": [1e-3, 3e-3], "optimizer.warmup_steps": [10, 100]}, seeds=(0, 1))
    assert len(points) == 8
    assert points["learning_rate=0.003,warmup_steps=10,seed=1"] == {
        "optimizer.learning_rate": 3e-3, "optimizer.warmup_steps": 10, "train.seed": 1}
    space = {"optimizer.learning_rate": sweep.LogUniform(1e-4, 1e-2), "model.num_layers": [2, 4]}
    drawn = sweep.random_search(space, num_points=5, seed=7)
    assert drawn == sweep.random_search(space, num_points=5, seed=7), "the same seed draws the same points"
    assert len(drawn) == 5 and drawn != sweep.random_search(space, num_points=5, seed=8)
    for overrides in drawn.values():
        assert 1e-4 <= overrides["optimizer.learning_rate"] <= 1e-2 and overrides["model.num_layers"] in (2, 4)


def test_bad_points_are_refused_before_running(tmp_path):
    experiment = tmp_path / "bad.py"
    experiment.write_text("from configs import gpt_tiny\nget_config = gpt_tiny.get_config\n"
                          "def points():\n    return {'a': {'optimizer.learning_rat': 1e-3}}\n")
    with pytest.raises(ConfigError, match="optimizer.learning_rat"):
        sweep.check_points(sweep.load_experiment(str(experiment)))
    experiment.write_text(experiment.read_text().replace("learning_rat'", "warmup_steps'").replace("1e-3", "'ten'"))
    with pytest.raises(ConfigError, match="point 'a'.*warmup_steps"):
        sweep.check_points(sweep.load_experiment(str(experiment)))


def test_print_commands_gives_one_train_line_per_point():
    result = subprocess.run([sys.executable, "tools/sweep.py", "experiments/lr_warmup_gpt_tiny.py",
                             "--workdir=runs/lr_warmup", "--print-commands"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("python tools/train.py --config=experiments/") for line in lines)
    assert "--workdir=runs/lr_warmup/learning_rate=0.01,warmup_steps=100,seed=0" in lines[-1]
    assert "--config.optimizer.learning_rate=0.01 --config.optimizer.warmup_steps=100" in lines[-1]


def _sweep(workdir, **kwargs):
    return [sys.executable, "tools/sweep.py", TINY, f"--workdir={workdir}"], dict(cwd=REPO, text=True, **kwargs)


@pytest.mark.slow  # 25-40 s on 2 cores: the default suite stays under 15 minutes
def test_killed_sweep_skips_finished_points_on_rerun(tmp_path):
    workdir = tmp_path / "sweep"
    first, second = (workdir / name for name in sweep.load_experiment(str(REPO / TINY)).points())
    command, options = _sweep(workdir)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               **options)
    deadline = time.time() + 300
    while not sweep.is_done(str(first)) and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its running trainer, as a crash would
    except ProcessLookupError:  # it had already finished both points
        pass
    process.wait()
    assert sweep.is_done(str(first)), process.stdout.read()
    first_done_at = os.path.getmtime(first / sweep.DONE_FILE)
    interrupted = os.path.isdir(second / "checkpoints") and any(n.isdigit() for n in os.listdir(second / "checkpoints"))

    rerun = subprocess.run(command, capture_output=True, timeout=300, **options)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{first.name}: finished, skipping" in rerun.stdout
    assert os.path.getmtime(first / sweep.DONE_FILE) == first_done_at, "the finished point ran again"
    if interrupted:
        assert f"{second.name}: resuming" in rerun.stdout
        assert "resumed from step" in (second / "log.txt").read_text()
    assert sweep.is_done(str(second))

    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["point"] for row in rows] == [first.name, second.name]
    for row in rows:
        assert row["status"] == "done" and row["steps"] == "6"
        assert math.isfinite(float(row["best loss"])) and float(row["best loss"]) <= float(row["final loss"])
        assert float(row["tokens/s"]) > 0
    assert (workdir / "validation.png").stat().st_size > 10_000
    assert "| optimizer.learning_rate |" in (workdir / "results.md").read_text()
