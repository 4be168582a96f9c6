"""Where metrics go: `metrics.jsonl` (the machine-readable record), TensorBoard event files,
optionally Weights & Biases (logging.wandb), and a progress line on the terminal. Only
process 0 writes. In a workdir on an object store (gs://...) both files grow in a local
staging copy uploaded whole now and then and at every checkpoint (lm/storage.py says why)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

import jax
import numpy as np

from lm import storage
from lm.config import ConfigError, LoggingConfig


class _WandbRun:
    """The run's Weights & Biases mirror: the same scalars (x axis "step") and the config.

    Its id is kept in <workdir>/wandb/run_id, so a resumed workdir continues the same W&B run;
    steps are logged as a metric rather than W&B's own step counter, which refuses a step lower
    than one already logged (a resume repeats the steps after its checkpoint)."""

    def __init__(self, workdir: str, logging: LoggingConfig):
        try:
            import wandb  # noqa: PLC0415 (optional: pip install '.[tracking]')
        except ImportError:
            raise ConfigError("logging.wandb=true needs the wandb package: pip install '.[tracking]' (or wandb), "
                              "or set --config.logging.wandb=false") from None
        directory = storage.join(workdir, "wandb")
        storage.makedirs(directory)
        id_path = storage.join(directory, "run_id")
        if not storage.exists(id_path):
            storage.write_text(id_path, uuid.uuid4().hex[:12])
        run_id = storage.read_text(id_path).strip()
        # wandb keeps its own files (its offline log, its upload queue) in a local folder.
        self._local = tempfile.mkdtemp(prefix="lm-wandb-") if storage.is_remote(workdir) else None
        self._run = wandb.init(project=logging.wandb_project, entity=logging.wandb_entity or None,
                               mode=logging.wandb_mode or None, dir=self._local or workdir, id=run_id, resume="allow",
                               name=os.path.basename(storage.absolute(workdir).rstrip("/")))
        self._run.define_metric("step")
        self._run.define_metric("*", step_metric="step")

    def log(self, step: int, values: dict) -> None:
        self._run.log({"step": step, **values})

    def text(self, tag: str, text: str) -> None:
        self._run.summary[tag] = text

    def config(self, config: dict) -> None:
        self._run.config.update(config, allow_val_change=True)  # a resume may change unguarded fields

    def close(self) -> None:
        self._run.finish()
        if self._local:
            shutil.rmtree(self._local, ignore_errors=True)


def process_start_time() -> float:
    """When this process was launched (Unix time): Linux's /proc start time, so `wall_time` counts
    Python start-up, imports and data preparation too (launch-to-first-step is read from it).
    Elsewhere, now."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat") as f:
            boot_time = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot_time + started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class MetricsWriter:
    def __init__(self, workdir: str, enabled: bool | None = None, logging: LoggingConfig | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.start_time = process_start_time()
        self._jsonl = self._tensorboard = self._wandb = None
        if self.enabled and logging is not None and logging.wandb:
            self._wandb = _WandbRun(workdir, logging)
        self.workdir = workdir
        if self.enabled:
            with self._writing("metrics.jsonl"):
                storage.makedirs(workdir)
                self._jsonl_file = storage.AppendOnlyFile(storage.join(workdir, "metrics.jsonl"))
                _drop_partial_last_line(self._jsonl_file.local_path)
                self._jsonl = open(self._jsonl_file.local_path, "a", buffering=1)
            with self._writing("tensorboard/"):
                self._tensorboard = _EventFile(storage.join(workdir, "tensorboard"))

    @contextlib.contextmanager
    def _writing(self, name: str):
        """A failed write (a full disk, a lost mount) stops the run at once, naming the file and the
        fix. Everything is written in this thread: a writer thread dying on a full disk would leave
        the loop blocked on its queue, deaf to SIGTERM, holding the workdir's lock."""
        try:
            yield
        except OSError as error:
            from lm.workdir import RunError  # noqa: PLC0415 (workdir reads metrics lazily too)
            hint = (f"free space on that filesystem (df -h {self.workdir}) or choose a --workdir elsewhere"
                    if error.errno == errno.ENOSPC else "check that the workdir is writable")
            raise RunError(f"writing {storage.join(self.workdir, name)} failed ({error.strerror or error}): {hint}; "
                           f"then run the same command again to resume from the newest checkpoint") from None

    def write(self, step: int, metrics: dict) -> None:
        """One record: {"step", "wall_time" (seconds since this process started), **metrics}."""
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in metrics.items()}
        record = {"step": int(step), "wall_time": round(time.time() - self.start_time, 3), **values}
        with self._writing("metrics.jsonl"):
            self._jsonl.write(json.dumps(record) + "\n")
        with self._writing("tensorboard/"):
            self._tensorboard.scalars(values, int(step))
        if self._wandb:
            self._wandb.log(int(step), values)
        self.sync()

    def sync(self, force: bool = False) -> None:
        """Uploads the files of a workdir on an object store (every UPLOAD_EVERY_SECONDS, or now
        if `force`: the trainer forces it at each checkpoint, so a resume finds the metrics of
        every step its checkpoint holds). Nothing for a local workdir."""
        if self.enabled:
            with self._writing("metrics.jsonl"):
                self._jsonl_file.sync(force)
            with self._writing("tensorboard/"):
                self._tensorboard.sync(force)

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        if self.enabled:
            with self._writing("tensorboard/"):
                self._tensorboard.text(tag, text, step)
            if self._wandb:
                self._wandb.text(tag, text)

    def write_config(self, config: dict, step: int = 0) -> None:
        """The run's config as a TensorBoard text panel ("config"): a table of dotted keys."""
        self.write_text("config", config_markdown(config), step)
        if self.enabled and self._wandb:
            self._wandb.config(config)

    def close(self) -> None:
        if self.enabled:
            with self._writing("metrics.jsonl"):
                self._jsonl.close()
                self._jsonl_file.close()
            with self._writing("tensorboard/"):
                self._tensorboard.close()
            if self._wandb:
                self._wandb.close()


# Optional imports tensorboardX's package makes for features we never use (tensors from torch,
# s3:// and gs:// record writers): with torch installed (the [hf] extra) they cost 1.3-1.8 s of
# every launch's time to first step on a 2-core Xeon, for event files we write from numpy floats.
_TENSORBOARDX_SKIPS = ("torch", "boto3", "google.cloud.storage")


def _import_tensorboardx() -> None:
    """Imports tensorboardX once, with those optional modules hidden unless this process already
    has them (a hidden module makes tensorboardX's `try: import` take its fallback path)."""
    if "tensorboardX" in sys.modules:
        return
    hidden = [name for name in _TENSORBOARDX_SKIPS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))  # None in sys.modules: `import name` raises ImportError
    try:
        import tensorboardX  # noqa: F401, PLC0415 (only process 0 needs it)
    finally:
        for name in hidden:
            del sys.modules[name]


class _EventFile:
    """TensorBoard's event file, written and flushed in the caller's thread (tensorboardX's
    SummaryWriter writes from a thread of its own, whose errors nobody sees). In a remote
    directory it is written in a staging copy and uploaded (lm/storage.py): tensorboardX's own
    gs:// writer uploads the whole file at every flush, faster than GCS lets one object change."""

    def __init__(self, directory: str):
        _import_tensorboardx()
        from tensorboardX.event_file_writer import EventsWriter  # noqa: PLC0415

        storage.makedirs(directory)
        self._staging = tempfile.mkdtemp(prefix="lm-events-") if storage.is_remote(directory) else None
        self._events = EventsWriter(os.path.join(self._staging or directory, "events"))
        written = self._events._file_name  # events.out.tfevents.<time>.<host>: a new file each run
        self._file = storage.AppendOnlyFile(storage.join(directory, os.path.basename(written)), keep_existing=False,
                                            staged_at=written if self._staging else None)

    def sync(self, force: bool) -> None:
        self._file.sync(force)

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto import event_pb2  # noqa: PLC0415

        self._events.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, values: dict, step: int) -> None:
        from tensorboardX import summary  # noqa: PLC0415

        for key, value in values.items():
            self._write(summary.scalar(key, value), step)
        self._events.flush()

    def text(self, tag: str, text: str, step: int) -> None:
        from tensorboardX import summary  # noqa: PLC0415

        self._write(summary.text(tag, text), step)
        self._events.flush()

    def close(self) -> None:
        self._events.close()
        self._file.close()
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)


def _drop_partial_last_line(path: str) -> None:
    """A run killed in mid-write leaves a last line without its newline; appending after it
    would glue the next record onto it. Cut it off (its steps are redone on resume)."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_records(workdir: str) -> list[dict]:
    """Every record of `workdir`'s metrics.jsonl, in file order (a resumed run appends, so a step
    may appear twice: the later record is the one that counts). The one reader of the file.

    A last line cut short (a kill in mid-write) is skipped: it is the one record that can be
    partial, and the steps it held are redone on resume. A damaged line anywhere else is an
    error that names the file and line."""
    path = storage.join(workdir, "metrics.jsonl")
    if not storage.exists(path):
        return []
    lines = storage.read_text(path).split("\n")
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}, line {number}, is not JSON ({line[:80]!r}): the file was edited or damaged; "
                                 f"remove that line to go on") from None
    return found


def records(workdir: str, key: str) -> dict[int, dict]:
    """{step: the last metrics.jsonl record at that step holding `key`}, finite values only."""
    return {record["step"]: record for record in read_records(workdir)
            if key in record and np.isfinite(record[key])}


def best_step(workdir: str, steps, key: str = "eval/loss", higher_is_better: bool = False) -> int | None:
    """Among `steps` (e.g. the kept checkpoints), the one whose logged `key` is best; None if
    none of them was evaluated. The one rule evaluation, init_from and reports select by."""
    scores = {step: record[key] for step, record in records(workdir, key).items() if step in set(steps)}
    if not scores:
        return None
    return (max if higher_is_better else min)(scores, key=scores.get)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def config_markdown(config: dict, prefix: str = "") -> str:
    """A nested config dict as a two-column markdown table (TensorBoard renders markdown)."""
    rows = []

    def walk(tree, path):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{path}{key}.")
            else:
                rows.append(f"| {path}{key} | {json.dumps(value)} |")

    walk(config, prefix)
    return "| key | value |\n| --- | --- |\n" + "\n".join(rows)
