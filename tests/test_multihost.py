"""Two local processes with 4 simulated CPU devices each (jax.distributed over 127.0.0.1)
train like one process with 8 devices, and checkpoints move between a 2-process run and a
1-process run on a different mesh, both ways.

  python -m pytest -m multihost tests/test_multihost.py
"""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from lm import distributed
from lm.config import ConfigError

from conftest import REPO
from test_sharding import OVERRIDES, RUNNER, assert_same_training, device_env, load, run_runner

MESH = "data=2,fsdp=2,tensor=2"
TRAIN = [sys.executable, str(REPO / "tools" / "train.py"), "--config=configs/gpt_tiny.py"] + [
    f"--config.{k}={v}" for k, v in {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 8, "model.mlp_dim": 256,
        "model.max_len": 64, "data.seq_len": 64, "tokenizer.vocab_size": 512, "train.batch_size": 8,
        "optimizer.warmup_steps": 5, "optimizer.decay_steps": 12, "train.log_every_steps": 1,
        "eval.every_steps": 1000, "eval.max_batches": 1, "checkpoint.every_steps": 6,
        "checkpoint.async_save": False, "train.sample_tokens": 4}.items()]


def run_processes(command, logdir, count=2, devices_each=4, timeout=600):
    """Starts `count` processes of `command` + multi-host flags; returns their (stdout, stderr).
    Output goes to files, not pipes: a process blocked on a full pipe would stall the others."""
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    os.makedirs(logdir, exist_ok=True)
    procs, files = [], []
    for i in range(count):
        out, err = open(os.path.join(logdir, f"{i}.out"), "w+"), open(os.path.join(logdir, f"{i}.err"), "w+")
        files.append((out, err))
        procs.append(subprocess.Popen(
            command + [f"--coordinator_address={address}", f"--num_processes={count}", f"--process_id={i}"],
            cwd=REPO, env=device_env(devices_each), stdout=out, stderr=err, text=True))
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = []
    for out, err in files:
        out.seek(0), err.seek(0)
        outputs.append((out.read(), err.read()))
        out.close(), err.close()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    return outputs


@pytest.mark.multihost
@pytest.mark.slow  # minutes: gloo collectives between local processes
def test_two_processes_train_like_one_process_with_eight_devices(tmp_path):
    # The one-process run goes first: it also fills the token cache, which two processes
    # starting together would both try to build.
    run_runner(tmp_path / "one", [MESH], 8, ["--steps=10"])
    command = RUNNER + [f"--out={tmp_path / 'two'}", f"--overrides={json.dumps(OVERRIDES)}", f"--mesh={MESH}",
                        "--steps=10"]
    outputs = run_processes(command, tmp_path / "logs")
    assert "processes 2" in outputs[0][0] and "devices 8" in outputs[0][0]
    two, one = load(tmp_path / "two", MESH), load(tmp_path / "one", MESH)
    assert_same_training(two, one)
    # each process holds a quarter of the fsdp x tensor-sharded MLP weight, like one device of eight
    assert tuple(two["shard/['decoder']['layer_0']['mlp']['wi']"]) == (32, 128)


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["train/loss"] for r in map(json.loads, f) if "train/loss" in r}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """12 steps in one process on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    subprocess.run(TRAIN + ["--config.train.steps=12", f"--workdir={workdir}"], cwd=REPO, env=device_env(None),
                   check=True, capture_output=True)
    return losses(workdir)


def assert_resumed_matches(workdir, reference):
    resumed = losses(workdir)
    assert sorted(resumed) == list(range(1, 13))
    np.testing.assert_allclose([resumed[s] for s in range(7, 13)], [reference[s] for s in range(7, 13)],
                               rtol=2e-5)


@pytest.mark.multihost
@pytest.mark.slow
def test_checkpoint_from_two_processes_restores_into_one_process_on_another_mesh(reference_run, tmp_path):
    workdir = tmp_path / "run"
    outputs = run_processes(TRAIN + ["--config.train.steps=6", "--config.mesh.data=1",
                                     "--config.mesh.fsdp=4", "--config.mesh.tensor=2", f"--workdir={workdir}"], tmp_path / "logs")
    assert "step      6/6" in outputs[0][0] and "loss" not in outputs[1][0], "only process 0 logs"
    assert os.path.isdir(workdir / "checkpoints" / "6")
    result = subprocess.run(TRAIN + ["--config.train.steps=12", f"--workdir={workdir}"], cwd=REPO,
                            env=device_env(None), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 6" in result.stdout
    assert_resumed_matches(workdir, reference_run)


@pytest.mark.multihost
@pytest.mark.slow
def test_checkpoint_from_one_process_restores_into_two_processes(reference_run, tmp_path):
    workdir = tmp_path / "run"
    subprocess.run(TRAIN + ["--config.train.steps=6", f"--workdir={workdir}"], cwd=REPO, env=device_env(None),
                   check=True, capture_output=True)
    outputs = run_processes(TRAIN + ["--config.train.steps=12", "--config.mesh.data=2", "--config.mesh.fsdp=2",
                                     "--config.mesh.tensor=2", f"--workdir={workdir}"], tmp_path / "logs")
    assert "resumed from step 6" in outputs[0][0]
    assert_resumed_matches(workdir, reference_run)


def test_distributed_settings_from_flags_environment_and_cluster():
    assert distributed.resolve(environ={}) == ("single", {})
    flags = distributed.DistributedConfig("10.0.0.1:1234", 4, 2)
    assert distributed.resolve(flags, environ={}) == (
        "explicit", {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2})
    env = {"LM_COORDINATOR_ADDRESS": "h:1", "LM_NUM_PROCESSES": "2", "LM_PROCESS_ID": "1"}
    assert distributed.resolve(environ=env)[1] == {"coordinator_address": "h:1", "num_processes": 2,
                                                   "process_id": 1}
    assert distributed.resolve(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == ("auto", {})
    assert distributed.resolve(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) == ("single", {})
    assert distributed.resolve(environ={"TPU_WORKER_HOSTNAMES": "a,b"}) == ("auto", {})
    with pytest.raises(ConfigError, match="missing --num_processes, --process_id"):
        distributed.resolve(distributed.DistributedConfig("h:1"), environ={})
    with pytest.raises(ConfigError, match="--process_id=2 must be in"):
        distributed.resolve(distributed.DistributedConfig("h:1", 2, 2), environ={})


LAUNCH = [sys.executable, str(REPO / "tools" / "launch.py")]


def test_launch_dry_run_prints_per_host_commands_and_runs_nothing(tmp_path):
    tpu = subprocess.run(LAUNCH + ["--platform=tpu", "--tpu=pod", "--zone=us-east5-a", "--workdir=gs://b/r", "--",
                                   "--config=configs/llama_7b.py", "--config.mesh.fsdp=-1"],
                         capture_output=True, text=True, check=True).stdout
    assert "[dry run]" in tpu and "gcloud compute tpus tpu-vm ssh pod --zone=us-east5-a --worker=all" in tpu
    assert "tools/train.py --workdir=gs://b/r --config=configs/llama_7b.py --config.mesh.fsdp=-1" in tpu
    script = tmp_path / "job.sbatch"
    slurm = subprocess.run(LAUNCH + ["--platform=slurm", "--nodes=4", f"--workdir={tmp_path}", f"--script={script}",
                                     "--", "--config=configs/llama_7b.py"], capture_output=True, text=True,
                           check=True).stdout
    assert "#SBATCH --nodes=4" in slurm and "#SBATCH --ntasks-per-node=1" in slurm and "srun " in slurm
    assert not script.exists(), "a dry run writes and submits nothing"
    manual = subprocess.run(LAUNCH + ["--platform=manual", "--hosts=h0,h1", "--workdir=/w", "--",
                                      "--config=configs/gpt_tiny.py"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert [line.split()[1] for line in manual[1:]] == ["h0", "h1"]
    assert all("--coordinator_address=h0:8476 --num_processes=2" in line for line in manual[1:])
    assert "--process_id=0" in manual[1] and "--process_id=1" in manual[2]


@pytest.mark.multihost
@pytest.mark.slow
def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path):
    """A preemption notice reaches one host only: JAX's preemption service makes every process
    stop after the same step and write that checkpoint, instead of one host leaving the others
    blocked in the next step's collectives."""
    import signal
    import time

    workdir = tmp_path / "run"
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    command = TRAIN + ["--config.train.steps=400", "--config.mesh.data=2", "--config.mesh.fsdp=2",
                       "--config.mesh.tensor=2", f"--workdir={workdir}", f"--coordinator_address={address}",
                       "--num_processes=2"]
    logs = [open(tmp_path / f"{i}.log", "w+") for i in range(2)]
    procs = [subprocess.Popen(command + [f"--process_id={i}"], cwd=REPO, env=device_env(4), stdout=logs[i],
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        deadline = time.time() + 300
        while not (workdir / "checkpoints" / "6").is_dir() and time.time() < deadline:
            assert all(p.poll() is None for p in procs), "a process exited before the first checkpoint"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    assert codes == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "preemption notice on a host" in outputs[0]
    stopped = int(outputs[0].split("preempted: stopped after step ")[1].split(" ")[0])
    assert 6 <= stopped < 400 and (workdir / "checkpoints" / str(stopped)).is_dir()


_STREAMING_HOST = """
import dataclasses, sys
import numpy as np
from tests.conftest import small_config
from lm.tasks import causal_lm

class LoggedRecords:  # the grain data source, noting which records this process reads
    def __init__(self, records):
        self.records, self.read = records, set()
    def __len__(self):
        return len(self.records)
    def __getitem__(self, index):
        self.read.add(index)
        return self.records[index]

index, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pipeline = causal_lm.CausalLMPipeline(small_config(**{"data.streaming": True}))
corpus = pipeline.prepare()
logged = LoggedRecords(corpus.train[0].records)
corpus = dataclasses.replace(corpus, train=(dataclasses.replace(corpus.train[0], records=logged),))
iterator = pipeline.train_iterator(corpus, index, count)
batches = [next(iterator) for _ in range(3)]
np.savez(out, read=np.asarray(sorted(logged.read)), **{f"{k}{i}": b[k] for i, b in enumerate(batches) for k in b})
"""


@pytest.mark.multihost
def test_streaming_processes_read_disjoint_records_and_together_make_the_one_process_batch(tmp_path):
    """data.streaming=true, as two processes (hosts) and as one: each host reads only its own
    records, and at every step host 0's rows followed by host 1's are the one-process batch."""
    runs = {"one": (0, 1), "host0": (0, 2), "host1": (1, 2)}
    procs = {name: subprocess.Popen([sys.executable, "-c", _STREAMING_HOST, str(i), str(n), str(tmp_path / name)],
                                    cwd=REPO, env=device_env(None), stderr=subprocess.PIPE, text=True)
             for name, (i, n) in runs.items()}
    for name, proc in procs.items():
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    one, host0, host1 = (np.load(tmp_path / f"{name}.npz") for name in runs)
    assert not set(host0["read"]) & set(host1["read"]), "two hosts read the same record"
    assert set(host0["read"]) | set(host1["read"]) == set(one["read"])
    for key in (k for k in one.files if k != "read"):
        assert host0[key].shape[0] == host1[key].shape[0] == one[key].shape[0] // 2
        assert np.array_equal(np.concatenate([host0[key], host1[key]]), one[key]), key
