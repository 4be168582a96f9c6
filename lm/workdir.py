"""Workdir safety: one run per workdir at a time, and no silent change of model or data on resume.

- `WorkdirLock`: an exclusive `fcntl.flock` on `<workdir>/.lock` (holding the owner's pid).
  The kernel drops the lock when the process dies, even by SIGKILL, so no stale lock remains.
- `check_config`: a workdir that already has checkpoints remembers its config
  (`config.json`); resuming with a config that changes the model, the tokenizer or the data
  (`is_guarded`: the fields lm/config.py marks guarded on resume) is refused with a diff of
  the fields, unless explicitly allowed (`--allow_config_change`). Other changes (steps,
  learning rate, logging, mesh...) are allowed and listed in the log.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any, Callable

from lm.config import ConfigError, is_guarded

TOKENIZER_FILE = "tokenizer.model (file contents)"


class RunError(RuntimeError):
    """The run stopped (or cannot start) for a reason its message names, with what to do next."""


class WorkdirLock:
    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
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


def has_checkpoints(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def check_config(workdir: str, current: dict, tokenizer_proto: bytes, allow_change: bool,
                 log: Callable[[str], None] = print) -> None:
    """Refuses (ConfigError) to resume a workdir's checkpoints with a config that changes the
    model, tokenizer or data, unless `allow_change`; logs every other change."""
    config_path = os.path.join(workdir, "config.json")
    if not (os.path.exists(config_path) and has_checkpoints(workdir)):
        return
    with open(config_path) as f:
        saved = json.load(f)
    changes = config_changes(saved, current)
    tokenizer_path = os.path.join(workdir, "tokenizer.model")
    if os.path.exists(tokenizer_path):
        with open(tokenizer_path, "rb") as f:
            if f.read() != tokenizer_proto:
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
