"""The run directory: its layout, written and read here and nowhere else.

  WORKDIR/config.json        the resolved config (model.vocab_size filled in), replaced atomically
  WORKDIR/tokenizer.model    the tokenizer, so the workdir is self-contained
  WORKDIR/data_files.json    the local data files trained on, with the sha256 of their contents
  WORKDIR/checkpoints/STEP/  orbax checkpoints (lm/checkpoint.py)
  WORKDIR/metrics.jsonl      one JSON record per log event (lm/metrics.py)
  WORKDIR/tensorboard/       TensorBoard event files
  WORKDIR/sample.txt, eval_report.json, .lock

`resolve(path, which)` names one checkpoint of a run for every reader (init_from, a
distillation teacher, generation, evaluation, quantization, export): `which` is "best" (the
default everywhere: best by the run's own selection metric, validation loss unless the
objective names another; the newest if no kept checkpoint was evaluated), "latest", or a step.

The workdir may be a local path or a URL (gs://bucket/run): every file goes through
lm/storage.py (docs/storage.md).

Safety, for the run that writes it:
- `WorkdirLock`: an exclusive `fcntl.flock` on `<workdir>/.lock` (holding the owner's pid).
  The kernel drops the lock when the process dies, even by SIGKILL, so no stale lock remains.
  An object store has no such lock: a lock object would outlive a preempted or killed run (the
  usual way a TPU run ends) and block the very resume it should allow, unless it were leased
  and renewed from a thread. So a URL workdir is not locked, with a warning; the launcher
  (one job per workdir) is what keeps two runs apart there.
- `check_config`: a workdir that already has checkpoints remembers its config
  (`config.json`); resuming with a config that changes the model, the tokenizer or the data
  (`is_guarded`: the fields lm/config.py marks guarded on resume) is refused with a diff of
  the fields, unless explicitly allowed (`--allow_config_change`). Other changes (steps,
  learning rate, logging, mesh...) are allowed and listed in the log.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from typing import Any, Callable

from lm import config as config_lib
from lm import storage
from lm.config import Config, ConfigError, is_guarded

CONFIG, TOKENIZER, CHECKPOINTS = "config.json", "tokenizer.model", "checkpoints"
DATA_FILES = "data_files.json"

TOKENIZER_FILE = "tokenizer.model (file contents)"


class RunError(RuntimeError):
    """The run stopped (or cannot start) for a reason its message names, with what to do next."""


class WorkdirLock:
    def __init__(self, workdir: str, log: Callable[[str], None] = print):
        self.path = storage.join(workdir, ".lock")
        self._fd: int | None = None
        self.log = log

    def acquire(self) -> "WorkdirLock":
        if storage.is_remote(self.path):
            self.log(f"WARNING: {os.path.dirname(self.path)} is on an object store, where no lock is taken: make sure "
                     f"no other run writes this workdir (docs/storage.md)")
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(f"workdir {os.path.dirname(self.path)} is in use by another run (pid {owner}): two runs "
                           f"must not write the same workdir; stop that run or choose another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """[(dotted key, saved value, current value)] for every field that differs."""
    old, new = flatten(saved), flatten(current)
    missing = object()
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            changes.append((key, "(absent)" if before is missing else before, "(absent)" if after is missing else after))
    return changes


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of the committed checkpoints (orbax writes a save under a temporary name and
    renames it to the bare step number only once it is complete)."""
    directory = storage.join(workdir, CHECKPOINTS)
    if not storage.isdir(directory):
        return []
    return sorted(int(name) for name in storage.listdir(directory) if name.isdigit())


def has_checkpoints(workdir: str) -> bool:
    return bool(checkpoint_steps(workdir))


def write_json(path: str, values: dict) -> None:
    """Replaced whole (lm/storage.py's write_bytes): a reader, another process or a resumed run,
    never sees half a file, even after a kill."""
    storage.write_text(path, json.dumps(values, indent=2, sort_keys=True))


def write_run_files(workdir: str, config: Config, tokenizer=None, data_files: dict | None = None) -> None:
    """config.json (the resolved config) and, if given, the tokenizer and the data files' digests."""
    storage.makedirs(workdir)
    write_json(storage.join(workdir, CONFIG), dataclasses.asdict(config))
    if tokenizer is not None:
        tokenizer.save(storage.join(workdir, TOKENIZER))
    if data_files:
        write_json(storage.join(workdir, DATA_FILES), data_files)


def check_data_files(workdir: str, current: dict, allow_change: bool, log: Callable[[str], None] = print) -> None:
    """Refuses (ConfigError) to resume a workdir's checkpoints on local data files that differ from
    those it trained on (a glob that lost or gained a file, a file rewritten), naming the files,
    unless `allow_change`: the run would go on with other data and another validation split."""
    path = storage.join(workdir, DATA_FILES)
    if not (has_checkpoints(workdir) and storage.exists(path)):
        return
    try:
        saved = json.loads(storage.read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} cannot be read ({error}): it was edited or damaged; delete it to resume "
                          f"without comparing the data files") from None
    changes = []
    for split in sorted(set(saved) | set(current)):
        before, now = saved.get(split, {}), current.get(split, {})
        changes += [f"  {split}: {name}: gone" for name in sorted(set(before) - set(now))]
        changes += [f"  {split}: {name}: new" for name in sorted(set(now) - set(before))]
        changes += [f"  {split}: {name}: contents changed (sha256 {before[name][:12]} -> {now[name][:12]})"
                    for name in sorted(set(before) & set(now)) if before[name] != now[name]]
    if not changes:
        return
    listed = "\n".join(changes)
    if not allow_change:
        raise ConfigError(f"the data files differ from those the checkpoints in {workdir} were trained on ({path} "
                          f"-> now):\n{listed}\nResuming would train on other data, with another validation split. "
                          f"Restore the files, use another --workdir, or pass --allow_config_change to resume anyway.")
    log(f"WARNING: resuming on changed data files (--allow_config_change):\n{listed}")


def read_config(workdir: str, require_tokenizer: bool = True) -> Config:
    """The workdir's config.json, its tokenizer path pointing at the workdir's own copy.
    `require_tokenizer=False` (weights-only uses such as export) accepts a workdir without one."""
    path = storage.join(workdir, CONFIG)
    if not storage.exists(path):
        raise ConfigError(f"{workdir!r} has no {CONFIG}: give the --workdir of a run trained with tools/train.py")
    try:
        values = json.loads(storage.read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} cannot be read ({error}): it was edited or damaged") from None
    # The workdir carries its own tokenizer; the path it was trained from may be gone.
    tokenizer_path = storage.join(workdir, TOKENIZER)
    if not storage.exists(tokenizer_path):
        if require_tokenizer:
            raise ConfigError(
                f"{workdir!r} has no {TOKENIZER}. A workdir converted from Hugging Face needs a tokenizer whose ids "
                f"match the checkpoint's vocabulary (a sentencepiece model or a tokenizer.json): convert again into a "
                f"new workdir with `tools/convert.py --from_hf=HF_DIR --workdir=NEW_DIR --tokenizer=PATH`")
        tokenizer_path = ""
    values.setdefault("tokenizer", {})["path"] = tokenizer_path
    return config_lib.from_config_dict(values)


def selection(config: Config) -> tuple[str, bool]:
    """(metric, higher is better) by which a run of `config` ranks its checkpoints."""
    from lm import tasks  # noqa: PLC0415 (objectives import the data stack; only needed here)

    return tasks.objective(config).selection


def resolve(path: str, which: str | int = "best") -> tuple[str, int]:
    """(workdir, step) of the checkpoint that `path` and `which` name. `path` is a workdir, its
    checkpoints folder, or one step folder (WORKDIR/checkpoints/STEP: that step). `which`:
    "best", "latest", or a step number (int or digits)."""
    from lm import metrics  # noqa: PLC0415

    path = storage.absolute(path).rstrip("/")
    if not storage.isdir(path):
        raise ConfigError(f"{path!r} does not exist: give a trained workdir or one of its checkpoints")
    parent, name = os.path.split(path)  # a URL splits the same way (posix separators)
    if name.isdigit() and os.path.basename(parent) == CHECKPOINTS:
        if str(which) not in ("best", "latest", name):
            raise ConfigError(f"{path} is checkpoint {name}, but checkpoint {which} was asked for: give one of the two")
        return os.path.dirname(parent), int(name)
    if name == CHECKPOINTS and not storage.isdir(storage.join(path, CHECKPOINTS)):
        path = parent
    steps = checkpoint_steps(path)
    if not steps:
        only_lock = set(storage.listdir(path)) <= {".lock", CONFIG, TOKENIZER}
        hint = (" (a run that failed before its first checkpoint leaves only its lock and config: rerun it)"
                if only_lock else "")
        raise ConfigError(f"{path} holds no checkpoints{hint}: give a workdir that has trained")
    if which == "latest":
        return path, steps[-1]
    if which == "best":
        metric, higher = selection(read_config(path, require_tokenizer=False))
        best = metrics.best_step(path, steps, metric, higher)
        return path, steps[-1] if best is None else best
    if not str(which).isdigit():
        raise ConfigError(f"checkpoint {which!r}: choose best, latest or a step number")
    if int(which) not in steps:
        raise ConfigError(f"{path} has no checkpoint {which}; it has steps {steps}")
    return path, int(which)


def check_config(workdir: str, current: dict, tokenizer_proto: bytes, allow_change: bool,
                 log: Callable[[str], None] = print) -> None:
    """Refuses (ConfigError) to resume a workdir's checkpoints with a config that changes the
    model, tokenizer or data, unless `allow_change`; logs every other change."""
    config_path = storage.join(workdir, CONFIG)
    if not has_checkpoints(workdir):
        return
    if not storage.exists(config_path):
        log(f"WARNING: {config_path} is missing, so this config cannot be compared with the one that made the "
            f"checkpoints; their shapes are checked before restoring, and config.json is written again from this run")
        return
    try:
        saved = json.loads(storage.read_text(config_path))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{config_path} cannot be read ({error}): it was edited or damaged. Restore it, or delete "
                          f"it to resume with this command's config (the checkpoints' shapes are still "
                          f"checked)") from None
    changes = config_changes(saved, current)
    tokenizer_path = storage.join(workdir, TOKENIZER)
    if storage.exists(tokenizer_path):
        if storage.read_bytes(tokenizer_path) != tokenizer_proto:
            changes.append((TOKENIZER_FILE, "as saved in the workdir", "a different tokenizer"))
    guarded = [c for c in changes if is_guarded(c[0]) or c[0] == TOKENIZER_FILE]
    other = [c for c in changes if c not in guarded]
    diff = lambda items: "\n".join(f"  {k}: {a!r} -> {b!r}" for k, a, b in items)  # noqa: E731
    if guarded and not allow_change:
        raise ConfigError(
            f"workdir {workdir} holds checkpoints of a run whose model or data differ from this config "
            f"(saved {config_path} -> now):\n{diff(guarded)}\nResuming would load those checkpoints into a different "
            f"run. Use another --workdir, restore the old values, or pass --allow_config_change to resume anyway.")
    if guarded:
        log(f"WARNING: resuming with changed model/data fields (--allow_config_change):\n{diff(guarded)}")
    if other:
        log(f"config changes since the last run in this workdir:\n{diff(other)}")
