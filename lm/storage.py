"""Where a run's files live: a local path, or any URL `etils.epath` opens (gs://, s3://, ...).

Every file of a run directory goes through here (lm/workdir.py, lm/metrics.py, the tokenizer,
lm/checkpoint.py's bookkeeping; orbax and tensorstore take the same strings themselves). A local
path keeps the exact behaviour of plain files; a URL goes through epath, whose gs:// backend here
is fsspec's gcsfs (`pip install '.[gcs]'`; with TensorFlow installed epath takes tf.io.gfile).

Object stores differ from a disk in three ways that matter, decided here once:
- Atomic replace. A disk needs write-then-rename so no reader sees half a file. An object store
  commits an object whole or not at all, and a "rename" there is a copy and a delete, so a URL
  is written directly: the same guarantee, one request.
- No append. metrics.jsonl and TensorBoard's event files grow record by record. For a URL they
  grow in a local staging copy (`AppendOnlyFile`), uploaded whole at most every
  `UPLOAD_EVERY_SECONDS`, at each checkpoint (`sync(force=True)`) and at close: one object per
  file, so every reader (`metrics.read_records`, TensorBoard, `cat`) sees one plain file, and a
  write rate GCS allows (about one update per second per object). Rewriting the whole file costs
  O(size) per upload: a 100,000-step run logging every 10 steps holds about 5 MB of metrics.
  A kill loses at most the records since the last upload; those steps are redone on resume anyway.
- No kernel lock: see WorkdirLock in lm/workdir.py.
"""

from __future__ import annotations

import contextlib
import glob as glob_lib
import gzip
import io
import os
import shutil
import tempfile
import time

from etils import epath

from lm.config_fields import ConfigError  # not lm.config: its checks import this module

UPLOAD_EVERY_SECONDS = 15.0


def is_remote(path) -> bool:
    """True for a URL (gs://bucket/run, s3://...), False for a local path."""
    return "://" in os.fspath(path)


def absolute(path: str) -> str:
    """A local path made absolute; a URL as it is."""
    return path if is_remote(path) else os.path.abspath(path)


def join(base: str, *names: str) -> str:
    return os.fspath(epath.Path(base).joinpath(*names)) if is_remote(base) else os.path.join(base, *names)


def exists(path: str) -> bool:
    return epath.Path(path).exists()


def isdir(path: str) -> bool:
    return epath.Path(path).is_dir()


def isfile(path: str) -> bool:
    return epath.Path(path).is_file()


def listdir(path: str) -> list[str]:
    return sorted(child.name for child in epath.Path(path).iterdir())


def glob(pattern: str) -> list[str]:
    """The paths matching a glob pattern, sorted; a URL as URLs (`**` only locally: epath refuses it
    on object stores, where it could take thousands of listing requests)."""
    if not is_remote(pattern):
        return sorted(glob_lib.glob(pattern))
    parts = pattern.split("/")
    fixed = next((i for i, part in enumerate(parts) if glob_lib.has_magic(part)), len(parts))
    if fixed == len(parts):
        return [pattern] if exists(pattern) else []
    base = epath.Path("/".join(parts[:fixed]))
    return sorted(os.fspath(match) for match in base.glob("/".join(parts[fixed:])))


def makedirs(path: str) -> None:
    """A local folder and its parents; nothing on an object store, whose "folders" are key prefixes
    (an empty marker object would only be one more thing to list)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def size_and_mtime(path: str) -> tuple[int, int]:
    """(bytes, modification time: ns for a local file, s for an object, which changes only when
    rewritten), what a cache of a file's contents is keyed by."""
    if not is_remote(path):
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime_ns
    stat = epath.Path(path).stat()
    return stat.length, stat.mtime


def read_bytes(path: str) -> bytes:
    return epath.Path(path).read_bytes()


@contextlib.contextmanager
def open_bytes(path: str):
    """A file opened to read its bytes, a .gz decompressed as it is read (text corpora)."""
    with (epath.Path(path).open("rb") if is_remote(path) else open(path, "rb")) as raw:
        if not path.endswith(".gz"):
            yield raw
            return
        with gzip.GzipFile(fileobj=raw) as unzipped:
            yield unzipped


def open_text(path: str, encoding: str = "utf-8", newline: str | None = None):
    """A text file opened for reading, local or a URL, a .gz decompressed (data files)."""
    if not is_remote(path):
        if path.endswith(".gz"):
            return gzip.open(path, "rt", encoding=encoding, newline=newline)
        return open(path, encoding=encoding, newline=newline)
    raw = epath.Path(path).open("rb")
    return io.TextIOWrapper(gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw, encoding=encoding,
                            newline=newline)


def read_text(path: str) -> str:
    return epath.Path(path).read_text()


def write_bytes(path: str, data: bytes) -> None:
    """Replaced whole: a reader (another process, a resumed run) never sees half a file, even after
    a kill. Locally: write a temporary file, then rename; on an object store: one upload."""
    if is_remote(path):
        epath.Path(path).write_bytes(data)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def copy_tree(source: str, target: str) -> list[epath.Path]:
    """Every file under folder `source` copied, streamed, to the same place under `target` (either
    of them local or a URL); returns the files copied."""
    copied, root = [], _key(source)
    for folder, _, names in epath.Path(source).walk():  # not rglob: epath refuses `**` on object stores
        below = _key(folder)[len(root):].strip("/")  # fsspec's walk names folders without the gs://
        for name in names:
            item = epath.Path(source).joinpath(below, name)
            destination = epath.Path(target).joinpath(below, name)
            makedirs(os.fspath(destination.parent))
            with item.open("rb") as read, destination.open("wb") as write:
                shutil.copyfileobj(read, write, 1 << 20)
            copied.append(item)
    return copied


def _key(path) -> str:
    return os.fspath(path).split("://", 1)[-1].rstrip("/")


def move(source: str, target: str) -> None:
    """A folder moved. On an object store a rename is a copy and a delete anyway, done here object
    by object (epath's rename wants the target's parent to exist, and prefixes never "exist")."""
    if not is_remote(source):
        shutil.move(source, target)
        return
    for item in copy_tree(source, target):  # object by object: a prefix is no folder to remove
        item.unlink()


def require_local(path: str, field: str, why: str) -> None:
    """Refuses a URL where only a local path works, naming the field, the reason and the fix."""
    if path and is_remote(path):
        raise ConfigError(f"{field}={path!r}: {why}, so it must be a local path. Copy it to a local disk first "
                          f"(e.g. `gcloud storage cp -r {path} /local/dir`) and point {field} there (docs/storage.md)")


class AppendOnlyFile:
    """A file that only grows (metrics.jsonl, a TensorBoard event file) at `path`, local or remote.

    `local_path` is where the bytes are appended: the file itself for a local path; for a URL, a
    copy in a staging folder (or `staged_at`, a local file the caller writes), filled with the
    file's current contents when `keep_existing` (a resumed run appends to its metrics), and
    uploaded whole by `sync` (see the module docstring)."""

    def __init__(self, path: str, keep_existing: bool = True, staged_at: str | None = None):
        self.path = path
        self.remote = is_remote(path)
        self._staging = tempfile.mkdtemp(prefix="lm-staging-") if self.remote and not staged_at else None
        self.local_path = path if not self.remote else staged_at or os.path.join(self._staging, os.path.basename(path))
        if self.remote and keep_existing and exists(path):
            with open(self.local_path, "wb") as f:
                f.write(read_bytes(path))
        self._uploaded_size, self._uploaded_at = -1, 0.0

    def sync(self, force: bool = False) -> None:
        """Uploads the staging copy if it changed, and if `force` or UPLOAD_EVERY_SECONDS have
        passed since the last upload; nothing for a local path."""
        if not self.remote or not os.path.exists(self.local_path):
            return
        size = os.path.getsize(self.local_path)
        if size == self._uploaded_size or not (force or time.time() - self._uploaded_at >= UPLOAD_EVERY_SECONDS):
            return
        with open(self.local_path, "rb") as f:
            epath.Path(self.path).write_bytes(f.read())
        self._uploaded_size, self._uploaded_at = size, time.time()

    def close(self) -> None:
        """The last upload, then the staging copy is removed."""
        self.sync(force=True)
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
