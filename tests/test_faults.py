"""Fault injection: the promises of docs/reliability.md, each broken on purpose.

Kills (SIGKILL at random points, including mid-checkpoint) must resume bitwise; SIGTERM must
checkpoint and exit 0; corrupt checkpoints must be detected and skipped; workdir locks and
config changes must be enforced; a disk error while saving must keep the previous checkpoint.
NaN steps, bad data and bad configs are tests/test_faults_values.py. Random kill points come from FAULTS_SEED (printed; set it to replay).
conftest.py prints "faults: N scenarios tried, M passed" at the end of the session.
"""

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lm import checkpoint as checkpoint_lib
from lm import config as config_lib
from lm import assembly, trainer, workdir as workdir_lib

from conftest import CORPUS, REPO, small_config
from test_end_to_end import SMALL_FLAGS, TRAIN, read_metrics, train_losses

pytestmark = pytest.mark.faults

STEPS = 60
# One XLA:CPU device (tools/train.py splits per core by default): the in-process twins' split, for bitwise equality.
FLAGS = SMALL_FLAGS + [f"--config.train.steps={STEPS}", "--config.train.log_every_steps=1",
                       "--config.checkpoint.every_steps=10", "--config.eval.every_steps=1000", "--cpu_devices=1"]
SEED = int(os.environ.get("FAULTS_SEED", time.time_ns() % 10_000))
RANDOM = random.Random(SEED)
print(f"faults: FAULTS_SEED={SEED}")


def same_config(**overrides):
    """The in-process twin of FLAGS (the same model, data and schedule)."""
    values = {"train.steps": STEPS, "train.log_every_steps": 1, "checkpoint.every_steps": 10,
              "eval.every_steps": 1000, "checkpoint.async_save": True}
    values.update(overrides)
    return small_config(**values)


def fingerprint_file(workdir, step):
    with open(os.path.join(workdir, "checkpoints", str(step), "fingerprint", "metadata")) as f:
        saved = json.load(f)
    return saved["leaves"], saved["data_sha256"]


def logged_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        steps_seen = [json.loads(line)["step"] for line in f if line.endswith("\n")]
    return max(steps_seen, default=0)


def saving_now(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any("tmp" in name for name in os.listdir(directory))


def assert_losses_match(workdir, reference):
    expected = train_losses(read_metrics(reference))
    records = read_metrics(workdir)
    for record in records:
        if "train/loss" in record:
            assert record["train/loss"] == expected[record["step"]], f"loss differs at step {record['step']}"
    return records


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of FLAGS: the ground truth every interrupted run must match bitwise."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    subprocess.run(TRAIN + FLAGS + [f"--workdir={workdir}"], cwd=REPO, check=True, capture_output=True)
    return workdir


@pytest.fixture(scope="module")
def abstract_state():
    return assembly.build(same_config()).abstract_state


# --- Crash: SIGKILL at random points, and during a checkpoint save. ------------------------------------------

@pytest.mark.slow  # a minute or more on 2 cores; CI runs the slow set after the default suite
def test_sigkill_at_random_points_and_mid_save_resumes_bitwise(reference, tmp_path):
    """One workdir killed three times (two random steps, once while a checkpoint is being written),
    then run to the end: every loss it ever logged, its final parameters, optimizer state and data
    position equal the uninterrupted run's."""
    workdir = str(tmp_path / "killed")
    command = TRAIN + FLAGS + [f"--workdir={workdir}"]
    first, second = sorted(RANDOM.sample(range(3, STEPS - 5), 2))
    plan = [("step", first), ("save", None), ("step", second)]
    kills = []
    for kind, target in plan:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        floor = logged_step(workdir)
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            if kind == "step" and logged_step(workdir) >= max(target, floor + 1):
                break
            if kind == "save" and logged_step(workdir) > floor and saving_now(workdir):
                break
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills.append((kind, logged_step(workdir)))
        process.wait()
    print(f"faults: FAULTS_SEED={SEED}: SIGKILLs after logged steps {kills}")
    assert len(kills) >= 2, f"the run finished before it could be killed: {kills}"
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    records = assert_losses_match(workdir, reference)
    assert max(r["step"] for r in records) == STEPS
    assert fingerprint_file(workdir, STEPS) == fingerprint_file(reference, STEPS), "final state differs"


@pytest.mark.slow
def test_issue_command_killed_and_rerun_logs_identical_losses(tmp_path):
    """The exact acceptance command (full gpt_tiny, minutes on CPU)."""
    command = TRAIN + ["--config.train.steps=240", "--config.train.log_every_steps=1",
                       "--config.checkpoint.every_steps=40"]
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    subprocess.run(command + [f"--workdir={reference}"], cwd=REPO, check=True, capture_output=True)
    process = subprocess.Popen(command + [f"--workdir={killed}"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    target = RANDOM.randint(45, 200)
    while process.poll() is None and logged_step(killed) < target:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = len(read_metrics(killed))
    subprocess.run(command + [f"--workdir={killed}"], cwd=REPO, check=True, capture_output=True)
    after = train_losses(read_metrics(killed)[before:])
    expected = train_losses(read_metrics(reference))
    assert max(after) == 240 and all(after[s] == expected[s] for s in after)


@pytest.mark.slow  # three launches: minutes on a loaded 2-core machine (about 1 min of CPU)
def test_sigkill_with_streaming_input_resumes_bitwise(tmp_path):
    """data.streaming=true with a two-source mixture: killed at a random step, then run again,
    every logged loss, the per-source token counts, the final state and the data position equal
    an uninterrupted run's (the iterator's state is the slots' positions, saved in every checkpoint)."""
    steps = 16
    mixture = f"shakespeare:{CORPUS}:0.7,copy:{CORPUS}:0.3"
    flags = SMALL_FLAGS + [f"--config.train.steps={steps}", "--config.train.log_every_steps=1",
                           "--config.checkpoint.every_steps=4", "--config.eval.every_steps=1000",
                           "--config.data.streaming=true", f"--config.data.mixture={mixture}"]
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    subprocess.run(TRAIN + flags + [f"--workdir={reference}"], cwd=REPO, check=True, capture_output=True)
    process = subprocess.Popen(TRAIN + flags + [f"--workdir={killed}"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    target = RANDOM.randint(5, steps - 3)
    deadline = time.time() + 300
    while process.poll() is None and logged_step(killed) < target and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    print(f"faults: FAULTS_SEED={SEED}: streaming run SIGKILLed after logged step {logged_step(killed)}")
    subprocess.run(TRAIN + flags + [f"--workdir={killed}"], cwd=REPO, check=True, capture_output=True)
    records = assert_losses_match(killed, reference)
    expected = {r["step"]: r for r in read_metrics(reference) if "train/tokens/copy" in r}
    for record in records:
        if "train/tokens/copy" in record:
            assert [record[f"train/tokens/{n}"] for n in ("shakespeare", "copy")] == [
                expected[record["step"]][f"train/tokens/{n}"] for n in ("shakespeare", "copy")]
    assert fingerprint_file(killed, steps) == fingerprint_file(reference, steps), "final state differs"


# --- Preemption: SIGTERM. -------------------------------------------------------------------------------------

@pytest.mark.slow  # a minute or more on 2 cores; CI runs the slow set after the default suite
def test_sigterm_finishes_the_step_checkpoints_and_exits_zero(reference, tmp_path):
    workdir = str(tmp_path / "preempted")
    command = TRAIN + FLAGS + [f"--workdir={workdir}"]
    target = RANDOM.randint(3, STEPS - 10)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while process.poll() is None and logged_step(workdir) < target:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-3000:]
    assert "preempted: stopped after step" in output and "Run the same command again to resume" in output
    saved = max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert f"checkpoint {saved} written" in output
    assert target <= saved < STEPS
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert_losses_match(workdir, reference)
    assert fingerprint_file(workdir, STEPS) == fingerprint_file(reference, STEPS)


def test_second_sigterm_exits_at_once(tmp_path):
    command = TRAIN + FLAGS + [f"--workdir={tmp_path / 'w'}"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("first step compiled"):
            process.send_signal(signal.SIGTERM)
        if line.startswith("SIGTERM received"):
            process.send_signal(signal.SIGTERM)
            break
    started = time.time()
    process.wait(timeout=30)
    process.stdout.close()
    assert process.returncode == -signal.SIGTERM, process.returncode
    assert time.time() - started < 5


# --- Corrupt checkpoints. --------------------------------------------------------------------------------------

def _biggest_file(directory):
    files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
    return max(files, key=os.path.getsize)


def _truncate(step_dir, other_dir):
    path = _biggest_file(os.path.join(step_dir, "state"))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_bytes(step_dir, other_dir):
    path = _biggest_file(os.path.join(step_dir, "state"))
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(64)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0x55 for b in chunk))


def _swap_in_other_arrays(step_dir, other_dir):
    """Readable, well-formed, wrong: another step's arrays under this step's fingerprint.
    Only the check of what was read can catch this."""
    shutil.rmtree(os.path.join(step_dir, "state"))
    shutil.copytree(os.path.join(other_dir, "state"), os.path.join(step_dir, "state"))


def _half_written(step_dir, other_dir):
    """Files of the state item missing, as if the copy or write stopped half-way."""
    data = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
    names = sorted(os.listdir(data), key=lambda name: -os.path.getsize(os.path.join(data, name)))
    for name in names[:(len(names) + 1) // 2]:  # the larger half, so array bytes are surely among them
        os.remove(os.path.join(data, name))


@pytest.mark.parametrize("corrupt", [_truncate, _flip_bytes, _swap_in_other_arrays, _half_written],
                         ids=["truncated", "bytes-flipped", "tampered-arrays", "half-written"])
def test_corrupt_newest_checkpoint_is_detected_and_the_previous_one_used(corrupt, reference, abstract_state,
                                                                         tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    good, bad = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())[-2:]
    corrupt(os.path.join(checkpoints, str(bad)), os.path.join(checkpoints, str(good)))
    messages = []
    checkpointer = checkpoint_lib.Checkpointer(checkpoints, config_lib.CheckpointConfig(), messages.append)
    step, state, data_state = checkpointer.restore_latest(abstract_state)
    checkpointer.close()
    assert step == good
    assert len(messages) == 1 and f"checkpoint step {bad}" in messages[0] and "previous checkpoint" in messages[0]
    # The cause in one readable line, not the library's sixty-line TensorStore spec.
    assert "\n" not in messages[0] and len(messages[0]) < 700 and "TensorStore" not in messages[0], messages[0]
    assert not os.path.exists(os.path.join(checkpoints, str(bad)))
    assert os.listdir(checkpoints + ".corrupt")[0].startswith(f"{bad}-")
    assert checkpoint_lib.fingerprint(state, data_state)["leaves"] == fingerprint_file(reference, good)[0]


def test_run_resumes_past_a_corrupt_checkpoint_bitwise(reference, tmp_path, capsys):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    _truncate(os.path.join(workdir, "checkpoints", str(STEPS)), None)
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    trainer.train(same_config(), workdir)
    assert "Moved it to" in capsys.readouterr().out
    assert sorted(train_losses(read_metrics(workdir))) == list(range(STEPS - 9, STEPS + 1))
    assert_losses_match(workdir, reference)
    assert fingerprint_file(workdir, STEPS) == fingerprint_file(reference, STEPS)


def test_when_every_checkpoint_is_corrupt_the_run_refuses(reference, abstract_state, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    for name in os.listdir(checkpoints):
        _truncate(os.path.join(checkpoints, name), None)
    checkpointer = checkpoint_lib.Checkpointer(checkpoints, config_lib.CheckpointConfig(), lambda m: None)
    with pytest.raises(checkpoint_lib.CheckpointError, match="none of the checkpoints"):
        checkpointer.restore_latest(abstract_state)


# --- Workdir safety. -------------------------------------------------------------------------------------------

def test_a_second_run_on_a_locked_workdir_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lm import workdir; "
                               f"workdir.WorkdirLock({workdir!r}).acquire(); print('locked', flush=True); "
                               "time.sleep(600)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.time()
    result = subprocess.run(TRAIN + FLAGS + [f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and f"is in use by another run (pid {holder.pid})" in result.stderr
    assert "Traceback" not in result.stderr and time.time() - started < 60
    with pytest.raises(workdir_lib.RunError, match="in use"):
        workdir_lib.WorkdirLock(workdir).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    workdir_lib.WorkdirLock(workdir).acquire().release()  # no stale lock after SIGKILL


@pytest.mark.parametrize("flag,diff", [
    ("--config.model.num_layers=3", "model.num_layers: 2 -> 3"),
    ("--config.data.seed=7", "data.seed: 0 -> 7"),
    ("--config.tokenizer.vocab_size=600", "tokenizer.vocab_size: 512 -> 600"),
])
def test_resuming_with_a_changed_model_or_data_is_refused_with_a_diff(flag, diff, reference, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    started = time.time()
    result = subprocess.run(TRAIN + FLAGS + [flag, f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and diff in result.stderr and "--allow_config_change" in result.stderr
    assert "Traceback" not in result.stderr and time.time() - started < 90


def test_allow_config_change_resumes_and_other_changes_are_just_listed(reference, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    result = subprocess.run(TRAIN + FLAGS + ["--config.data.seed=7", "--config.optimizer.learning_rate=5e-4",
                                             "--allow_config_change", f"--workdir={workdir}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data.seed: 0 -> 7" in result.stdout
    assert "-> 0.0005" in result.stdout.split("optimizer.learning_rate: ")[1].split("\n")[0]
    assert f"resumed from step {STEPS}" in result.stdout


# --- Disk errors while writing a checkpoint. -------------------------------------------------------------------

def _limit_file_size():
    limit = 300_000  # bytes: smaller than the checkpoint's largest file, larger than everything else written
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead


@pytest.mark.slow  # a minute or more on 2 cores; CI runs the slow set after the default suite
def test_a_disk_error_while_saving_keeps_the_previous_checkpoint(reference, abstract_state, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    shutil.rmtree(os.path.join(checkpoints, str(STEPS)))
    previous = max(int(s) for s in os.listdir(checkpoints) if s.isdigit())
    result = subprocess.run(TRAIN + FLAGS + [f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                            preexec_fn=_limit_file_size)
    assert result.returncode != 0, "the save should have failed"
    assert "File too large" in result.stderr or "EFBIG" in result.stderr or "too large" in result.stderr.lower()
    assert max(int(s) for s in os.listdir(checkpoints) if s.isdigit()) == previous
    checkpointer = checkpoint_lib.Checkpointer(checkpoints, config_lib.CheckpointConfig(), lambda m: None)
    step, _, _ = checkpointer.restore_latest(abstract_state)
    checkpointer.close()
    assert step == previous
    subprocess.run(TRAIN + FLAGS + [f"--workdir={workdir}"], cwd=REPO, check=True, capture_output=True)
    assert fingerprint_file(workdir, STEPS) == fingerprint_file(reference, STEPS)
