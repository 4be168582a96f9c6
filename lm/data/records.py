"""Raw documents as random-access array_record records, the streaming pipeline's sources.

A source is local text files or a tfds dataset. Local files are cut into records of about
`PIECE_BYTES` at line boundaries (a paragraph break when there is one near the end) and
written once, untokenized, as one array_record shard per file: a copy at disk speed, no
cleaning or tokenizing, cached by the files' paths, sizes and modification times. A tfds
dataset prepared in array_record format is read in place, one example a record.

`data.mixture` names several weighted sources: "name:spec:weight,..." where spec is a file
glob (several globs joined with "+") or `tfds:<dataset name>`, e.g.
`shakespeare:data/tinyshakespeare/input.txt:0.7,wiki:tfds:wikipedia/20230601.en:0.3`.
"""

from __future__ import annotations

import dataclasses
import glob as glob_lib
import hashlib
import json
import multiprocessing
import os
from typing import Sequence

import grain
import numpy as np

from lm import storage
from lm.config import ConfigError, DataConfig
from lm.data import text as text_lib

PIECE_BYTES = 64 * 1024  # a record: small enough to tokenize in a few ms, large enough to be cheap to index.
_RECORDS_VERSION = "1"  # bump when the cutting rule changes.
_WRITER_OPTIONS = "group_size:1,uncompressed"  # one record a chunk: random access reads exactly one.


@dataclasses.dataclass(frozen=True)
class Source:
    """One split of one source: `len()` documents, `[i]` -> str (raw, not yet cleaned).
    Picklable (grain worker processes open it again)."""
    name: str
    records: object  # a grain ArrayRecordDataSource or a tfds data source
    start: int
    stop: int
    text_key: str  # tfds: the feature holding the text; "": records are raw UTF-8 bytes
    identity: str
    token_dtype: str = ""  # a tokenized folder (tools/prepare_data.py): records are token ids of this dtype
    tokenizer_fingerprint: str = ""  # ... made by this tokenizer

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> str:
        record = self.records[self.start + index]
        return text_lib.decode_utf8(record[self.text_key] if self.text_key else record)

    def tokens(self, index: int) -> np.ndarray:
        """A tokenized source's document `index` (no EOS)."""
        return np.frombuffer(self.records[self.start + index], self.token_dtype).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class MixtureEntry:
    name: str
    spec: str  # file globs joined with "+", or tfds:<name>
    weight: float


def parse_mixture(spec: str) -> list[MixtureEntry]:
    """'name:spec:weight,...' -> entries with weights normalised to sum to 1."""
    entries = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, rest = part.partition(":")
        source, _, weight = rest.rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not name or not source or value <= 0:
            raise ConfigError(f"data.mixture entry {part!r} is not name:spec:weight with a positive weight, e.g. "
                              f"'shakespeare:data/tinyshakespeare/input.txt:0.7,wiki:tfds:wikipedia/20230601.en:0.3'")
        entries.append(MixtureEntry(name, source, value))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.mixture names a source twice ({', '.join(names)}): give each a distinct name")
    total = sum(e.weight for e in entries)
    return [dataclasses.replace(e, weight=e.weight / total) for e in entries]


def entries(data: DataConfig) -> list[MixtureEntry]:
    """The run's sources: data.mixture, else the one source data.tfds_name or data.train_files names."""
    if data.mixture:
        return parse_mixture(data.mixture)
    if data.tfds_name:
        return [MixtureEntry("train", "tfds:" + data.tfds_name, 1.0)]
    return [MixtureEntry("train", "+".join(p.strip() for p in data.train_files.split(",") if p.strip()), 1.0)]


def open_splits(data: DataConfig, entry: MixtureEntry) -> tuple[Source, Source]:
    """(train, validation) of one source. Local text without data.validation_files holds out
    its last `validation_fraction` of records (at least one)."""
    from lm.data import corpus as corpus_lib  # noqa: PLC0415 (imports tfds: not in worker processes)

    if entry.spec.startswith("tfds:"):
        name = entry.spec[len("tfds:"):]
        return (_open_tfds(data, entry.name, name, data.train_split),
                _open_tfds(data, entry.name, name, data.eval_split))
    folder = corpus_lib.resolve_path(entry.spec, corpus_lib.data_dir(data))
    if storage.is_remote(folder) and not glob_lib.has_magic(folder) and storage.isdir(folder):
        storage.require_local(folder, f"data source {entry.name!r}", corpus_lib.ARRAY_RECORD_IS_LOCAL)
    if os.path.isdir(folder):
        return _prepared_folder(data, entry.name, folder)
    files = corpus_lib.expand_files(entry.spec.replace("+", ","), f"data source {entry.name!r}",
                                    corpus_lib.data_dir(data))
    records, identity = local_records(files, data)
    if data.validation_files and not data.mixture:
        validation, validation_identity = local_records(
            corpus_lib.expand_files(data.validation_files, "data.validation_files", corpus_lib.data_dir(data)), data)
        return (Source(entry.name, records, 0, len(records), "", identity),
                Source(entry.name, validation, 0, len(validation), "", validation_identity))
    held_out = max(1, round(len(records) * data.validation_fraction))
    if len(records) <= held_out:
        raise ConfigError(f"data source {entry.name!r} ({entry.spec}) makes {len(records)} record(s) of up to "
                          f"{PIECE_BYTES // 1024} KiB: too few to hold out a validation split; give more text or "
                          f"data.validation_files")
    cut = len(records) - held_out
    return (Source(entry.name, records, 0, cut, "", identity + ":train"),
            Source(entry.name, records, cut, len(records), "", identity + ":validation"))


def _prepared_folder(data: DataConfig, name: str, folder: str) -> tuple[Source, Source]:
    """A folder tools/prepare_data.py wrote: its last validation_fraction of records validate."""
    from lm.data import prepare  # noqa: PLC0415

    manifest = prepare.read_manifest(folder)
    if manifest is None:
        raise ConfigError(f"data source {name!r}: {folder} is a folder without {prepare.MANIFEST}: give text files "
                          f"or globs, or a folder that tools/prepare_data.py finished writing")
    shards = [os.path.join(folder, shard) for shard in manifest["shards"]]
    records = grain.sources.ArrayRecordDataSource(shards)
    held_out = max(1, round(len(records) * data.validation_fraction))
    if len(records) <= held_out:
        raise ConfigError(f"data source {name!r} ({folder}) has {len(records)} record(s): too few to hold out a "
                          f"validation split")
    identity = f"prepared:{os.path.abspath(folder)}:{len(records)}"
    extra = {"token_dtype": manifest["dtype"], "tokenizer_fingerprint": manifest["tokenizer_fingerprint"]}
    return (Source(name, records, 0, len(records) - held_out, "", identity + ":train", **extra),
            Source(name, records, len(records) - held_out, len(records), "", identity + ":validation", **extra))


def _open_tfds(data: DataConfig, source_name: str, name: str, split: str) -> Source:
    import tensorflow_datasets as tfds  # noqa: PLC0415 (worker processes unpickling local sources skip it)

    from lm.data import corpus as corpus_lib  # noqa: PLC0415

    storage.require_local(data.tfds_data_dir, "data.tfds_data_dir", corpus_lib.ARRAY_RECORD_IS_LOCAL)
    try:
        records = tfds.data_source(name, split=split, data_dir=data.tfds_data_dir or None, try_gcs=False)
    except Exception as error:  # tfds raises several types for "not prepared here"
        raise ConfigError(
            f"tfds dataset {name!r} (split {split!r}) is not prepared in array_record format in "
            f"{data.tfds_data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets'}: prepare it with "
            f"tools/prepare_data.py --tfds_name={name} (needs internet once), or set data.tfds_data_dir to where it "
            f"is. ({type(error).__name__}: {error})") from None
    if len(records) == 0:
        raise ConfigError(f"tfds dataset {name!r} split {split!r} has no examples")
    return Source(source_name, records, 0, len(records), data.text_key, f"tfds:{name}:{split}")


def cut_pieces(path: str):
    """Yields the records of one text file: chunks of about PIECE_BYTES ending at a newline
    (at a paragraph break when one is in the chunk's second half), bytes, never empty."""
    with storage.open_bytes(path) as f:  # local or a URL; a .gz decompressed
        carry = b""
        while True:
            block = f.read(PIECE_BYTES)
            data = carry + block
            if not block:
                if data.strip():
                    yield data
                return
            cut = data.rfind(b"\n\n", len(data) // 2)
            cut = data.rfind(b"\n") if cut < 0 else cut + 1
            if cut < 0:  # one very long line: cut at a character boundary
                if len(data) < 4 * PIECE_BYTES:
                    carry = data
                    continue
                cut = len(data) - 1
                while cut > 0 and data[cut] & 0xC0 == 0x80:
                    cut -= 1
            piece, carry = data[:cut + 1], data[cut + 1:]
            if piece.strip():
                yield piece


def _write_shard(job: tuple[str, str]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415

    path, out = job
    writer, count = ArrayRecordWriter(out + ".tmp", _WRITER_OPTIONS), 0
    for piece in cut_pieces(path):
        writer.write(piece)
        count += 1
    writer.close()
    os.replace(out + ".tmp", out)
    return count


def local_records(files: Sequence[str], data: DataConfig, processes: int = 0):
    """(grain ArrayRecordDataSource over the files' records, identity), converting once (cached)."""
    from lm.data import corpus as corpus_lib  # noqa: PLC0415

    digest = hashlib.sha256(f"{_RECORDS_VERSION}|{PIECE_BYTES}".encode())
    for path in files:
        size, mtime = storage.size_and_mtime(path)
        digest.update(f"{storage.absolute(path)}:{size}:{mtime};".encode())
    key = digest.hexdigest()[:20]
    folder = os.path.join(corpus_lib.cache_root(data), "records", key)
    shards = [os.path.join(folder, f"{i:05d}-{os.path.basename(p)[:40]}.array_record") for i, p in enumerate(files)]
    done = os.path.join(folder, "done.json")
    if not os.path.exists(done):
        from lm.data import pipeline  # noqa: PLC0415 (its lock serialises processes sharing the cache)

        with pipeline.cache_lock(folder):
            if not os.path.exists(done):
                convert(list(zip(files, shards)), processes or data.num_workers)
                with open(done + ".tmp", "w") as f:
                    json.dump({"files": list(files)}, f)
                os.replace(done + ".tmp", done)
    return grain.sources.ArrayRecordDataSource(shards), f"records:{key}"


def convert(jobs: list[tuple[str, str]], processes: int, progress=None) -> int:
    """Writes each (text file, shard path) job not already written; returns the record count."""
    todo = [job for job in jobs if not os.path.exists(job[1])]
    count = 0
    if processes > 1 and len(todo) > 1:
        with multiprocessing.get_context("spawn").Pool(min(processes, len(todo))) as pool:
            for written in pool.imap_unordered(_write_shard, todo):
                count += written
                if progress:
                    progress(1)
    else:
        for job in todo:
            count += _write_shard(job)
            if progress:
                progress(1)
    return count
