"""Whole runs on the shipped corpus: loss falls, outputs land in the workdir, resume is exact,
and config mistakes fail fast with a clear message."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lm import assembly, trainer
from lm.config import ConfigError

from conftest import REPO, small_config

TRAIN = [sys.executable, str(REPO / "tools" / "train.py"), "--config=configs/gpt_tiny.py"]
SMALL_FLAGS = [f"--config.{k}={v}" for k, v in {
    "model.num_layers": 2, "model.embed_dim": 64, "model.mlp_dim": 256, "model.max_len": 64, "data.seq_len": 64,
    "tokenizer.vocab_size": 512, "train.batch_size": 8, "eval.max_batches": 2, "optimizer.warmup_steps": 5,
    "train.sample_tokens": 8}.items()]


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_losses(records):
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = small_config(**{"train.steps": 60, "eval.every_steps": 30, "checkpoint.every_steps": 30,
                             "train.log_every_steps": 1, "optimizer.learning_rate": 3e-3})
    final = trainer.train(config, workdir)
    return config, workdir, final


def test_loss_falls_on_real_text_and_outputs_are_written(finished_run):
    _, workdir, final = finished_run
    records = read_metrics(workdir)
    losses = train_losses(records)
    assert sorted(losses) == list(range(1, 61))
    assert sum(losses[s] for s in range(51, 61)) / 10 < sum(losses[s] for s in range(1, 11)) / 10 - 1.0
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [30, 60] and evals[1]["eval/loss"] < evals[0]["eval/loss"]
    for record in records:
        assert "wall_time" in record and "step" in record
    train_records = [r for r in records if "train/loss" in r]
    assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= set(train_records[0])
    # Throughput is per window of finished steps: step 1 (compiled inside it) has none, every
    # later record does.
    assert "train/tokens_per_sec" not in train_records[0]
    assert all(r["train/tokens_per_sec"] > 0 and r["train/mfu"] > 0 for r in train_records[1:])
    assert {"eval/loss", "eval/perplexity", "eval/bits_per_byte"} <= set(evals[-1])
    assert final["eval/perplexity"] == pytest.approx(2.718281828 ** final["eval/loss"], rel=1e-6)
    assert glob.glob(os.path.join(workdir, "**", "events.out.tfevents*"), recursive=True)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["30", "60"]
    assert json.load(open(os.path.join(workdir, "config.json")))["model"]["vocab_size"] == 512
    assert open(os.path.join(workdir, "sample.txt")).read().startswith("ROMEO:")


def test_resumed_run_equals_uninterrupted_run(finished_run, tmp_path):
    """Drop the last checkpoint and rerun: steps 31-60 replay from step 30 bit for bit."""
    config, workdir, _ = finished_run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "60"))
    os.remove(os.path.join(resumed, "metrics.jsonl"))
    trainer.train(config, resumed)
    replayed = train_losses(read_metrics(resumed))
    original = train_losses(read_metrics(workdir))
    assert sorted(replayed) == list(range(31, 61))
    assert all(replayed[s] == original[s] for s in replayed), "resumed losses differ from the uninterrupted run"


def test_kill_minus_nine_then_same_command_resumes_exactly(tmp_path):
    """The acceptance scenario: SIGKILL part-way, rerun the same command, compare losses."""
    steps = 150  # headroom: on a loaded machine the first checkpoint may commit many steps after it starts
    flags = SMALL_FLAGS + [f"--config.train.steps={steps}", "--config.train.log_every_steps=1",
                           "--config.checkpoint.every_steps=20", "--config.eval.every_steps=1000"]
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    subprocess.run(TRAIN + flags + [f"--workdir={reference}"], cwd=REPO, check=True, capture_output=True)
    process = subprocess.Popen(TRAIN + flags + [f"--workdir={killed}"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(killed, "checkpoints", "20")):
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    records_before_restart = len(read_metrics(killed))
    last_before_kill = max(train_losses(read_metrics(killed)))
    assert last_before_kill < steps, "the run finished before it could be killed"
    subprocess.run(TRAIN + flags + [f"--workdir={killed}"], cwd=REPO, check=True, capture_output=True)
    logged_after_restart = train_losses(read_metrics(killed)[records_before_restart:])
    expected = train_losses(read_metrics(reference))
    resumed_from = min(logged_after_restart) - 1
    assert max(logged_after_restart) == steps and resumed_from % 20 == 0 and resumed_from <= last_before_kill
    assert sorted(logged_after_restart) == list(range(resumed_from + 1, steps + 1))
    assert all(logged_after_restart[s] == expected[s] for s in logged_after_restart), "losses after restart differ"


@pytest.mark.parametrize("flag,message", [
    ("--config.optimizer.learnig_rate=1e-3", "learnig_rate"),
    ("--config.model.num_heads=5", "does not divide model.embed_dim"),
    ("--config.data.train_files=/no/such/file.txt", "no file matches"),
    ("--config.tokenizer.path=/no/such.model", "does not exist"),
    ("--config.optimizer.name=adamx", "choose one of"),
    ("--config.train.batch_size=6", None),  # fine on 1 device: must not fail
])
def test_config_mistakes_fail_fast_with_the_field_named(flag, message, tmp_path):
    command = TRAIN + SMALL_FLAGS + ["--config.train.steps=2", "--config.eval.every_steps=2",
                                     f"--workdir={tmp_path / 'w'}", flag]
    started = time.time()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if message is None:
        assert result.returncode == 0, result.stderr[-2000:]
        return
    assert result.returncode != 0
    assert message in result.stderr + result.stdout, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert time.time() - started < 60


def test_batch_that_does_not_divide_the_data_parallel_devices_is_refused():
    import jax
    from lm import sharding
    from lm.config import MeshConfig

    with pytest.raises(ConfigError, match="has 3 devices but 8 are present"):
        sharding.mesh_shape(MeshConfig(data=3, fsdp=1, tensor=1), 8)
    with pytest.raises(ConfigError, match="does not divide the 8 devices"):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3, tensor=1), 8)
    mesh = sharding.make_mesh(MeshConfig(), jax.devices()[:1])
    config = small_config(**{"train.batch_size": 8, "train.microbatches": 4})
    assembly.check_batch_layout(config, mesh)  # 1 device: any batch divides
    with pytest.raises(ConfigError, match="microbatches"):
        small_config(**{"train.batch_size": 8, "train.microbatches": 3})


def test_early_stopping_on_validation_loss(tmp_path):
    """With the learning rate at zero the validation loss never improves: patience 1 stops the
    run at its second evaluation and checkpoints there."""
    config = small_config(**{"train.steps": 40, "eval.every_steps": 10, "train.early_stopping_patience": 1,
                             "optimizer.learning_rate": 0.0, "optimizer.warmup_steps": 0})
    trainer.train(config, str(tmp_path))
    records = read_metrics(str(tmp_path))
    assert max(r["step"] for r in records) == 20
    assert "20" in os.listdir(tmp_path / "checkpoints")


def test_early_stopping_resumes_its_count(tmp_path):
    """Interrupted after its first evaluation, the run stops at the same step as above: the
    resumed run replays the logged evaluations instead of starting its count afresh."""
    values = {"eval.every_steps": 10, "train.early_stopping_patience": 1, "optimizer.learning_rate": 0.0,
              "optimizer.warmup_steps": 0}
    trainer.train(small_config(**{**values, "train.steps": 10}), str(tmp_path))
    trainer.train(small_config(**{**values, "train.steps": 40}), str(tmp_path))
    assert max(r["step"] for r in read_metrics(str(tmp_path))) == 20
