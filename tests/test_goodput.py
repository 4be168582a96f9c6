"""Seeing a run: where its wall time went (goodput and its parts), its MFU, and a profiler
trace of exactly the requested steps (lm/goodput.py, lm/profiling.py, lm/trainer.py)."""

import glob
import gzip
import json
import time

import pytest

from lm import metrics as metrics_lib
from tests.conftest import small_config


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory):
    from lm import trainer

    workdir = str(tmp_path_factory.mktemp("observed") / "run")
    started = time.perf_counter()
    trainer.train(small_config(**{"train.steps": 12, "eval.every_steps": 6, "checkpoint.every_steps": 6,
                                  "train.log_every_steps": 3, "profile.start_step": 4, "profile.num_steps": 3}),
                  workdir)
    return workdir, time.perf_counter() - started


def test_goodput_parts_add_up_to_the_wall_time(observed_run):
    workdir, wall = observed_run
    final = metrics_lib.read_records(workdir)[-1]
    parts = {key: value for key, value in final.items() if key.startswith("time/") and key != "time/wall"}
    assert set(parts) == {f"time/{name}" for name in
                          ("setup", "compile", "data_wait", "train_step", "eval", "checkpoint")}
    assert all(value > 0 for value in parts.values()), parts
    # Measured from outside the loop: the parts account for the whole call within 2%.
    assert sum(parts.values()) == pytest.approx(wall, rel=0.02), (parts, wall)
    assert final["train/goodput"] == pytest.approx(final["time/train_step"] / final["time/wall"])
    assert final["time/compile"] > final["time/train_step"] / 12  # compiling a step costs more than running one


def test_mfu_and_goodput_are_logged_with_every_train_record(observed_run):
    workdir, _ = observed_run
    train_records = [r for r in metrics_lib.read_records(workdir) if "train/loss" in r]
    assert [r["step"] for r in train_records] == [3, 6, 9, 12]
    for record in train_records:
        assert 0 < record["train/mfu"] < 1 and 0 < record["train/goodput"] < 1
        # Written from inside a train step's span, a record still counts that span: its parts
        # add up to its own wall time.
        parts = sum(value for key, value in record.items() if key.startswith("time/") and key != "time/wall")
        assert parts == pytest.approx(record["time/wall"], rel=0.02), record
    # Goodput grows as compilation recedes into the past.
    assert train_records[-1]["train/goodput"] > train_records[0]["train/goodput"]


def test_profile_window_traces_exactly_the_requested_steps(observed_run):
    workdir, _ = observed_run
    [xplane] = glob.glob(f"{workdir}/profile/plugins/profile/*/*.xplane.pb")  # TensorBoard's profile plugin
    [perfetto] = glob.glob(f"{workdir}/profile/plugins/profile/*/perfetto_trace.json.gz")
    with gzip.open(perfetto) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    steps = sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train" and "args" in e)
    assert steps == [4, 5, 6]


def test_a_record_written_inside_a_span_counts_that_span():
    """The progress line is written inside a train step's span (while the host waits for the
    previous step): its parts must still add up to its wall time, not lag by a step."""
    from lm import goodput

    now = [0.0]
    timeline = goodput.Timeline(clock=lambda: now[0])
    with timeline.part("setup"):
        now[0] += 2.0
    with timeline.part("train_step"):
        now[0] += 5.0
        inside = timeline.record()
    assert inside["time/setup"] == 2.0 and inside["time/train_step"] == 5.0 and inside["time/wall"] == 7.0
    assert inside["train/goodput"] == pytest.approx(5.0 / 7.0)
    assert timeline.record()["time/train_step"] == 5.0  # closing the span counts it once, not twice
