"""A run on an object store: `--workdir=gs://bucket/run` and `--config.data.train_files=gs://...`
against a local GCS server (tests/gcs_emulator.py: gcp-storage-emulator from PyPI), reached the way
real GCS is (gcsfs for epath, tensorstore's gcs driver for orbax's arrays; docs/storage.md).

What the bucket holds is checked by listing it over the emulator's JSON API, not through lm/."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import CORPUS, REPO, small_config
from test_end_to_end import SMALL_FLAGS, TRAIN, train_losses

pytestmark = pytest.mark.storage

BUCKET = "bucket"
WORKDIR = f"gs://{BUCKET}/run"
FLAGS = SMALL_FLAGS + ["--config.train.steps=16", "--config.train.log_every_steps=1", "--config.eval.every_steps=8",
                       "--config.checkpoint.every_steps=8", "--config.checkpoint.keep=3",
                       f"--config.data.train_files=gs://{BUCKET}/text/input.txt"]


class Emulator:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"
        # What a real-GCS user sets is only credentials (docs/storage.md); these point the same
        # clients at the emulator, with a fixed token since it checks none.
        self.env = {**os.environ, "STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def _call(self, method: str, path: str, data: bytes | None = None):
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def upload(self, name: str, data: bytes) -> None:
        self._call("POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={urllib.parse.quote(name)}", data)

    def download(self, name: str) -> bytes:
        return self._call("GET", f"/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media")

    def names(self, prefix: str) -> list[str]:
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
            page = json.loads(self._call("GET", f"/storage/v1/b/{BUCKET}/o?{query}"))
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    pytest.importorskip("gcsfs", reason="pip install '.[gcs]' (gcsfs): epath's gs:// backend")
    pytest.importorskip("gcp_storage_emulator", reason="pip install '.[dev]': the local GCS server")
    portpicker = pytest.importorskip("portpicker")
    emulator = Emulator(portpicker.pick_unused_port())
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"  # a file, not a pipe: a full pipe would stall it
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "gcs_emulator.py"), emulator.url.rsplit(":", 1)[1],
                               BUCKET], stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.time() + 30
        while True:
            try:
                emulator.names("")
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the GCS emulator did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield emulator
    finally:
        server.terminate()
        server.wait(timeout=30)


def train(gcs, *flags):
    result = subprocess.run(TRAIN + FLAGS + [f"--workdir={WORKDIR}", *flags], cwd=REPO, env=gcs.env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def metrics(gcs) -> list[dict]:
    return [json.loads(line) for line in gcs.download("run/metrics.jsonl").decode().splitlines()]


def test_workdir_on_gcs_trains_checkpoints_resumes_and_serves_tools(gcs, tmp_path):
    gcs.upload("text/input.txt", CORPUS.read_bytes())  # the training text is read from the bucket too
    out = train(gcs)
    assert not (REPO / "gs:").exists(), "a gs:// workdir became a local folder"
    names = gcs.names("run/")
    for name in ("config.json", "tokenizer.model", "data_files.json", "metrics.jsonl", "sample.txt",
                 "checkpoints/8/commit_success.txt", "checkpoints/16/commit_success.txt"):
        assert f"run/{name}" in names, f"{name} is not in the bucket: {names}"
    events = [n for n in names if n.startswith("run/tensorboard/events.out.tfevents")]
    assert len(events) == 1, names
    assert f"gs://{BUCKET}/text/input.txt" in json.loads(gcs.download("run/data_files.json"))["train"]
    first = metrics(gcs)
    assert max(r["step"] for r in first) == 16 and "WARNING" in out and "no lock" in out

    # TensorBoard reads the event file the bucket holds.
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / os.path.basename(events[0])).write_bytes(gcs.download(events[0]))
    reader = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={event_accumulator.SCALARS: 0})
    reader.Reload()
    assert [e.step for e in reader.Scalars("train/loss")] == list(range(1, 17))

    # Step 16's checkpoint damaged in the bucket (its array data overwritten): the rerun finds it out, moves
    # it aside within the bucket, resumes from step 8 and logs the losses of the run that never stopped.
    damaged = [n for n in gcs.names("run/checkpoints/16/state/") if "/d/" in n]
    for name in damaged:
        gcs.upload(name, b"\0" * len(gcs.download(name)))
    out = train(gcs)
    assert "resumed from step 8" in out and "Moved it to gs://bucket/run/checkpoints.corrupt/16-" in out
    assert any(n.startswith("run/checkpoints.corrupt/16-") for n in gcs.names("run/checkpoints.corrupt/"))
    records = metrics(gcs)
    resumed = train_losses(records[len(first):])
    assert sorted(resumed) == list(range(9, 17))
    assert resumed == {step: loss for step, loss in train_losses(first).items() if step > 8}
    assert "run/checkpoints/16/commit_success.txt" in gcs.names("run/checkpoints/16/")  # written anew

    # A tool reads the trained run straight from the bucket.
    generated = subprocess.run([sys.executable, "tools/generate.py", f"--workdir={WORKDIR}", "--prompt=ROMEO:",
                                "--max_new_tokens=4", "--temperature=0"], cwd=REPO, env=gcs.env,
                               capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert generated.stdout.startswith("ROMEO:") and f"{WORKDIR} step 16" in generated.stderr


def test_local_only_inputs_on_gcs_are_refused_with_the_fix(gcs, tmp_path):
    """What cannot be read remotely says so before anything is built."""
    from lm.config import ConfigError
    from lm.data import corpus

    data = dataclasses.replace(small_config().data, train_files="", tfds_name="tiny_shakespeare",
                               tfds_data_dir=f"gs://{BUCKET}/tfds")
    with pytest.raises(ConfigError, match="local file reads only.*gcloud storage cp"):
        corpus.open_split(data, "train")
    result = subprocess.run(TRAIN + FLAGS + [f"--workdir={tmp_path}", f"--config.data.cache_dir=gs://{BUCKET}/cache"],
                            cwd=REPO, env=gcs.env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "data.cache_dir" in result.stderr + result.stdout
    assert "must be a local path" in result.stderr + result.stdout
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_append_only_logs_upload_whole_at_most_every_interval_and_resume(gcs, monkeypatch):
    """metrics.jsonl and the event files on an object store: appends stay local until an upload is
    due (or forced, as at each checkpoint); each upload is the whole file; a reopened file goes on
    from what the bucket holds."""
    for key in ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"):
        monkeypatch.setenv(key, gcs.env[key])
    from lm import storage

    log = storage.AppendOnlyFile(f"gs://{BUCKET}/logs/metrics.jsonl")
    with open(log.local_path, "a") as f:
        f.write("1\n")
    log.sync()  # the first upload is due at once
    assert gcs.download("logs/metrics.jsonl") == b"1\n"
    with open(log.local_path, "a") as f:
        f.write("2\n")
    log.sync()  # within UPLOAD_EVERY_SECONDS: stays local
    assert gcs.download("logs/metrics.jsonl") == b"1\n"
    log.sync(force=True)
    assert gcs.download("logs/metrics.jsonl") == b"1\n2\n"
    log.close()
    assert not os.path.exists(log.local_path)
    reopened = storage.AppendOnlyFile(f"gs://{BUCKET}/logs/metrics.jsonl")
    with open(reopened.local_path, "a") as f:
        f.write("3\n")
    reopened.close()
    assert gcs.download("logs/metrics.jsonl") == b"1\n2\n3\n"
