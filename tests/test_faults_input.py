"""Fault injection, second part (issue #25): runs broken as a hostile tester or a new user would,
each a case of docs/reliability.md. A full disk, a diverging run, a workdir that lost its
config.json, data that changed under a resumed run, a metrics line cut by a kill, Ctrl-C,
numbers that make no sense, one huge line, and the messages of bad input.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lm import trainer, workdir as workdir_lib
from lm.config import ConfigError

from conftest import CORPUS, REPO, small_config
from test_end_to_end import SMALL_FLAGS, TRAIN, read_metrics

# Slow as a whole (about 4.5 min on 2 cores): CI runs it after the default suite; `pytest -m faults` runs it too.
pytestmark = [pytest.mark.faults, pytest.mark.slow]

TEXT = CORPUS.read_bytes()[:200_000]


def run_tool(args, **kwargs):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, **kwargs)


def checkpoint_steps(workdir):
    return workdir_lib.checkpoint_steps(str(workdir))


# --- 7. Numbers that make no sense are refused before anything is read or compiled. ----------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"eval.batch_size": -8}, r"'eval.batch_size' is -8; it must be a number in \[0, inf\)"),
    ({"optimizer.learning_rate": -1e-3}, r"'optimizer.learning_rate' is -0.001"),
    ({"optimizer.learning_rate": float("nan")}, r"'optimizer.learning_rate' is nan"),
    ({"optimizer.learning_rate": float("inf")}, r"'optimizer.learning_rate' is inf"),
    ({"optimizer.warmup_steps": -5}, r"'optimizer.warmup_steps' is -5"),
    ({"optimizer.b1": 1.0}, r"'optimizer.b1' is 1.0; it must be a number in \[0, 1\)"),
    ({"optimizer.b2": 1.5}, r"'optimizer.b2' is 1.5"),
    ({"optimizer.b2": -0.1}, r"'optimizer.b2' is -0.1"),
    ({"eval.max_batches": -1}, r"'eval.max_batches' is -1"),
    ({"train.sample_temperature": -0.5}, r"'train.sample_temperature' is -0.5"),
    ({"tokenizer.vocab_size": 261}, r"tokenizer.vocab_size=261 is too small.*at least 262"),
    ({"checkpoint.divergence_factor": 1.0}, r"'checkpoint.divergence_factor' is 1.0"),
], ids=["eval-batch", "lr-negative", "lr-nan", "lr-inf", "warmup", "b1", "b2-above", "b2-below", "max-batches",
        "temperature", "vocab", "divergence-factor"])
def test_numbers_out_of_range_are_refused_naming_the_field(overrides, message):
    started = time.time()
    with pytest.raises(ConfigError, match=message):
        small_config(**overrides)
    assert time.time() - started < 5


def test_a_vocabulary_too_small_for_the_corpus_says_how_large_it_must_be(tmp_path):
    """262 passes the static check (one distinct character), but tinyshakespeare's 65 characters
    need 320: sentencepiece's refusal becomes 'raise tokenizer.vocab_size' with the number."""
    config = small_config(**{"tokenizer.vocab_size": 300, "data.cache_dir": str(tmp_path / "cache")})
    with pytest.raises(ConfigError, match=r"vocab_size=300 is too small for this corpus.*at least 320; raise"):
        trainer.train(config, str(tmp_path / "w"))


# --- 5. A metrics line cut short by a kill. ---------------------------------------------------------------------

def test_a_truncated_last_metrics_line_does_not_block_the_resume(trained, tmp_path):
    workdir = _copy(trained, tmp_path)  # the 10-step run of the `trained` fixture below
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path, "a") as f:
        f.write('{"step": 11, "train/lo')  # killed in mid-write
    metrics = trainer.train(small_config(**{"train.steps": 15, "checkpoint.every_steps": 5,
                                            "eval.every_steps": 5}), workdir)
    assert math.isfinite(metrics["eval/loss"])
    records = read_metrics(workdir)  # every line parses: the partial one was cut before appending
    assert max(r["step"] for r in records) == 15
    with open(path) as f:
        assert all(json.loads(line) for line in f)


# --- 1. A full disk: the run stops at once, naming the file and the fix; the lock is released. ---------------

@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mount made for the test (its size set by `mount(size)`), unmounted afterwards."""
    mounted = []

    def mount(size: str) -> str:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs for the disk-full case (needs root or CAP_SYS_ADMIN): "
                        f"{result.stderr.strip()}")
        mounted.append(path)
        return str(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: str, leave: int) -> None:
    """Takes all but `leave` bytes of the filesystem with one file."""
    free = shutil.disk_usage(disk).free
    with open(os.path.join(disk, "filler"), "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def test_a_full_disk_while_logging_stops_the_run_at_once_and_releases_the_lock(small_disk, tmp_path):
    disk = small_disk("1m")
    _fill(disk, leave=48 * 1024)  # room for config.json, the tokenizer and a few dozen metric records
    workdir = os.path.join(disk, "w")
    config = small_config(**{"train.steps": 400, "train.log_every_steps": 1, "eval.every_steps": 1000,
                             "checkpoint.every_steps": 1000, "data.cache_dir": str(tmp_path / "cache")})
    started = time.time()
    with pytest.raises(workdir_lib.RunError, match=r"writing .*(metrics.jsonl|tensorboard/) failed \(No space left "
                                                   r"on device\): free space on that filesystem \(df -h"):
        trainer.train(config, workdir)
    assert time.time() - started < 120
    workdir_lib.WorkdirLock(workdir).acquire().release()  # released: a rerun is not told the workdir is in use


def test_a_full_disk_while_saving_is_reported_at_once_and_the_previous_checkpoint_kept(small_disk, tmp_path):
    """One checkpoint (1.7 MB) fits, the second does not: the failed background save is reported
    as soon as it fails, not at the next save (step 30), and checkpoint 10 still restores."""
    disk = small_disk("3m")
    workdir = os.path.join(disk, "w")
    config = small_config(**{"train.steps": 60, "train.log_every_steps": 1, "eval.every_steps": 1000,
                             "checkpoint.every_steps": 10, "checkpoint.async_save": True,
                             "data.cache_dir": str(tmp_path / "cache")})
    with pytest.raises(workdir_lib.RunError, match=r"No space left on device.*the disk is full.*df -h.*the "
                                                   r"previous checkpoint, step 10, is intact"):
        trainer.train(config, workdir)
    assert checkpoint_steps(workdir) == [10]
    logged = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
    assert max(logged) < 30, f"the failed save was noticed only at step {max(logged)}"
    workdir_lib.WorkdirLock(workdir).acquire().release()
    from lm import assembly, checkpoint as checkpoint_lib, config as config_lib
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config_lib.CheckpointConfig(),
                                               lambda m: None, read_only=True)
    step, _, _ = checkpointer.restore_latest(assembly.build(config).abstract_state)
    checkpointer.close()
    assert step == 10


# --- 2. A diverged state is never checkpointed; the run stops naming a real step and resumes when fixed. -------

def test_a_diverging_run_writes_no_diverged_checkpoint_and_resumes_with_a_sane_learning_rate(tmp_path):
    """The issue's command (learning rate 1e3): the loss reaches millions by step 5. Before, checkpoint
    5 was saved (eval loss 2.9 million), the stop named "step None", and with more allowed skips the
    run ended "done"."""
    workdir = str(tmp_path / "w")
    diverging = {"optimizer.learning_rate": 1e3, "train.steps": 20, "checkpoint.every_steps": 5,
                 "eval.every_steps": 5, "train.max_consecutive_nonfinite": 100}
    with pytest.raises(workdir_lib.RunError) as error:
        trainer.train(small_config(**diverging), workdir)
    message = str(error.value)
    assert "None" not in message and "the run diverged" in message and "Lower optimizer.learning_rate" in message
    assert "Checkpoint 5 was not written; no checkpoint was written yet" in message
    assert checkpoint_steps(workdir) == []
    metrics = trainer.train(small_config(**{"train.steps": 20, "checkpoint.every_steps": 5,
                                            "eval.every_steps": 5}), workdir)  # the advised fix works
    assert metrics["eval/loss"] < 6.5 and checkpoint_steps(workdir)[-1] == 20


def test_a_nan_stop_before_any_checkpoint_names_no_step_none(tmp_path):
    config = small_config(**{"train.steps": 20, "checkpoint.every_steps": 10, "eval.every_steps": 1000,
                             "train.nonfinite": "stop", "train.inject_nan_at_steps": "3"})
    with pytest.raises(workdir_lib.RunError, match=r"step 3: non-finite loss=nan.*No checkpoint was written yet, "
                                                   r"so a rerun starts over"):
        trainer.train(config, str(tmp_path / "w"))


# --- 6. Ctrl-C: like SIGTERM, the step finishes, a checkpoint is written, exit 0; a second one exits at once. -

INTERRUPTIBLE = TRAIN + SMALL_FLAGS + ["--config.train.steps=2000", "--config.train.log_every_steps=1",
                                       "--config.checkpoint.every_steps=1000", "--config.eval.every_steps=1000"]


def _interrupt(workdir, times):
    process = subprocess.Popen(INTERRUPTIBLE + [f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("first step compiled"):
            process.send_signal(signal.SIGINT)
        if line.startswith("SIGINT received") and times == 2:
            process.send_signal(signal.SIGINT)
            break
    started = time.time()
    lines += process.communicate(timeout=120)[0].splitlines(keepends=True)
    return process.returncode, "".join(lines), time.time() - started


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_zero(tmp_path):
    workdir = tmp_path / "w"
    returncode, output, _ = _interrupt(workdir, times=1)
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    saved = checkpoint_steps(workdir)
    assert len(saved) == 1 and 0 < saved[0] < 2000
    assert f"preempted: stopped after step {saved[0]} on SIGINT; checkpoint {saved[0]} written" in output


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    returncode, output, waited = _interrupt(tmp_path / "w", times=2)
    assert returncode == -signal.SIGINT, (returncode, output[-2000:])
    assert waited < 5 and "Traceback" not in output


# --- 3. A workdir without its config.json, or a changed model allowed through: never set aside, never restarted. -

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 10-step run with checkpoints at 5 and 10, copied by each test that changes it."""
    workdir = str(tmp_path_factory.mktemp("trained") / "w")
    trainer.train(small_config(**{"train.steps": 10, "checkpoint.every_steps": 5, "eval.every_steps": 5}), workdir)
    return workdir


def _copy(trained, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(trained, workdir)
    return workdir


def test_a_workdir_without_config_json_resumes_when_the_shapes_match(trained, tmp_path, capsys):
    workdir = _copy(trained, tmp_path)
    os.remove(os.path.join(workdir, "config.json"))
    trainer.train(small_config(**{"train.steps": 15, "checkpoint.every_steps": 5, "eval.every_steps": 5}), workdir)
    output = capsys.readouterr().out
    assert "config.json is missing" in output and "resumed from step 10" in output
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert not os.path.exists(os.path.join(workdir, "checkpoints.corrupt"))


@pytest.mark.parametrize("how", ["config-json-missing", "allow-config-change"])
def test_a_model_of_other_shapes_is_refused_before_restoring_and_the_checkpoints_left_alone(how, trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    if how == "config-json-missing":
        os.remove(os.path.join(workdir, "config.json"))
    config = small_config(**{"train.steps": 15, "model.num_layers": 3})
    for attempt in range(2):  # the original command run again afterwards must not have started over
        with pytest.raises(workdir_lib.RunError, match=r"(?s)hold a model of other shapes.*params\['decoder'\]"
                                                       r"\['layer_2'\].*(absent). -> .*They were left as they are"):
            trainer.train(config, workdir, allow_config_change=how == "allow-config-change")
    assert checkpoint_steps(workdir) == [5, 10]
    assert not os.path.exists(os.path.join(workdir, "checkpoints.corrupt"))
    assert os.path.exists(os.path.join(workdir, "config.json")) == (how == "allow-config-change")


def test_a_damaged_config_json_is_named(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write('{"model": {"num_layers": 2,')
    with pytest.raises(ConfigError, match=r"w/config.json cannot be read .*edited or damaged"):
        trainer.train(small_config(**{"train.steps": 15}), workdir)


# --- 4. Data that changed under a resumed run, and a rewritten file that keeps its size and time. -------------

def test_a_resume_whose_glob_lost_a_file_is_refused_naming_it(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_bytes(TEXT[:100_000])
    (data / "b.txt").write_bytes(TEXT[100_000:])
    values = {"data.train_files": str(data / "*.txt"), "data.cache_dir": str(tmp_path / "cache"),
              "checkpoint.every_steps": 5, "eval.every_steps": 5}
    workdir = str(tmp_path / "w")
    trainer.train(small_config(**values, **{"train.steps": 5}), workdir)
    (data / "b.txt").unlink()
    with pytest.raises(ConfigError, match=r"(?s)data files differ.*train: .*/data/b.txt: gone.*another validation "
                                          r"split.*--allow_config_change"):
        trainer.train(small_config(**values, **{"train.steps": 10}), workdir)
    trainer.train(small_config(**values, **{"train.steps": 10}), workdir, allow_config_change=True)
    assert "resuming on changed data files" in capsys.readouterr().out and checkpoint_steps(workdir)[-1] == 10


def test_a_file_rewritten_with_the_same_size_and_time_is_tokenized_again(tmp_path):
    from lm.data import pipeline
    path = tmp_path / "train.txt"
    config = small_config(**{"data.train_files": str(path), "data.cache_dir": str(tmp_path / "cache")})
    path.write_bytes(TEXT)
    stat = os.stat(path)
    before = pipeline.prepare(config.data, config.tokenizer)
    path.write_bytes(TEXT.upper())  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and os.stat(path).st_size == stat.st_size
    after = pipeline.prepare(config.data, config.tokenizer)
    assert before.tokenizer.decode(before.train_tokens[:20]).startswith("First Citizen")
    assert after.tokenizer.decode(after.train_tokens[:20]).startswith("FIRST CITIZEN")


# --- Messages: bad input fails in one line that names the file and the fix. --------------------------------------

@pytest.mark.parametrize("args,message", [
    (["tools/train.py", "--config=configs/nope.py", "--workdir=W"],
     "config error: --config=configs/nope.py does not exist; the shipped configs are configs/base.py, "),
    (["tools/train.py", "--config=NOGET", "--workdir=W"], "defines no get_config()"),
    (["tools/generate.py", "--prompts_file=missing.txt", "--workdir=W"],
     "--prompts_file=missing.txt cannot be read (No such file or directory)"),
    (["tools/train.py", "--cpu_devices", "2", "--workdir=W"], "write --cpu_devices=N"),
], ids=["missing-config", "no-get-config", "missing-prompts-file", "cpu-devices-space"])
def test_command_line_mistakes_fail_in_one_line(args, message, tmp_path):
    no_get_config = tmp_path / "noget.py"
    no_get_config.write_text("x = 1\n")
    args = [a.replace("NOGET", str(no_get_config)).replace("=W", f"={tmp_path / 'w'}") for a in args]
    result = run_tool([sys.executable] + args, timeout=120)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]


def test_a_truncated_gz_and_an_empty_tokenizer_are_named(tmp_path):
    import gzip
    path = tmp_path / "train.txt.gz"
    path.write_bytes(gzip.compress(TEXT)[:5000])
    with pytest.raises(ConfigError, match=r"train.txt.gz cannot be read .*damaged or cut short"):
        trainer.train(small_config(**{"data.train_files": str(path), "data.cache_dir": str(tmp_path / "c")}),
                      str(tmp_path / "w"))
    empty = tmp_path / "tokenizer.model"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"tokenizer file .*tokenizer.model' is empty"):
        trainer.train(small_config(**{"tokenizer.path": str(empty)}), str(tmp_path / "w2"))


def test_latin1_input_warns_with_the_share_of_replaced_bytes_and_the_file(tmp_path, capsys):
    from lm.data import pipeline
    (tmp_path / "utf8.txt").write_bytes(TEXT[:150_000])
    (tmp_path / "latin1.txt").write_bytes("Ça, élève: déjà vu.\n".encode("latin-1") * 2000)
    config = small_config(**{"data.train_files": str(tmp_path / "*.txt"), "data.cache_dir": str(tmp_path / "c")})
    pipeline.prepare(config.data, config.tokenizer)
    err = capsys.readouterr().err
    assert "1 of 2 file(s) are not valid UTF-8" in err and "latin1.txt (25% of its bytes)" in err
    assert "utf8.txt" not in err and "iconv -f latin1" in err


def test_a_single_line_corpus_is_split_and_its_tokenizer_trained_on_pieces(tmp_path, capsys):
    """Before: the validation split was empty ('change data.validation_fraction') and sentencepiece
    silently dropped the line (over 64 KiB), then failed."""
    from lm.data import pipeline
    path = tmp_path / "one_line.txt"
    path.write_bytes(TEXT.replace(b"\n", b" "))
    config = small_config(**{"data.train_files": str(path), "data.cache_dir": str(tmp_path / "c")})
    corpus = pipeline.prepare(config.data, config.tokenizer)
    assert len(corpus.validation_tokens) > 1000 and corpus.tokenizer.vocab_size == 512
    assert "were cut at spaces into pieces to train the tokenizer" in capsys.readouterr().err
