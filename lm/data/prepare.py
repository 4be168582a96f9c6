"""Pre-processing a large corpus once (tools/prepare_data.py): local text files or a tfds
dataset -> array_record shards of raw documents (UTF-8) or of tokenized documents (token ids,
no EOS: the streaming packer adds it), written by several processes.

Resumable: each shard is written to a temporary name and renamed when complete, so a rerun
writes only the missing shards. `prepare_data.json` (written last) says what the folder holds;
a run reads the folder as a data source by naming it (`--config.data.train_files=DIR` or a
mixture entry `name:DIR:weight`), streaming.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os

import numpy as np

from lm import storage
from lm.data import records
from lm.data import text as text_lib
from lm.data import tokenizer as tokenizer_lib

MANIFEST = "prepare_data.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """One output shard: local file `path`, or records [start, stop) of a tfds split."""
    output: str
    path: str = ""
    tfds: tuple = ()  # (name, split, data_dir, text_key)
    start: int = 0
    stop: int = 0
    tokenizer_proto: bytes = b""


def _documents(job: Job):
    if job.path:
        yield from records.cut_pieces(job.path)
        return
    import tensorflow_datasets as tfds  # noqa: PLC0415

    name, split, data_dir, text_key = job.tfds
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, try_gcs=False)
    for index in range(job.start, job.stop):
        yield source[index][text_key]


def write_shard(job: Job) -> int:
    """Writes one shard (tokenized when the job has a tokenizer); returns its record count."""
    from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415

    tokenizer = tokenizer_lib.Tokenizer(job.tokenizer_proto) if job.tokenizer_proto else None
    dtype = np.uint16 if tokenizer and tokenizer.vocab_size <= 1 << 16 else np.uint32
    writer, count = ArrayRecordWriter(job.output + ".tmp", "group_size:1,uncompressed"), 0
    for document in _documents(job):
        if tokenizer is None:
            writer.write(document if isinstance(document, bytes) else document.encode())
        else:
            text = text_lib.clean(text_lib.decode_utf8(document))
            writer.write(np.asarray(tokenizer.encode(text), dtype).tobytes())
        count += 1
    writer.close()
    os.replace(job.output + ".tmp", job.output)
    return count


def plan(output: str, *, files: list[str] = (), tfds: tuple = (), num_examples: int = 0, num_shards: int = 0,
         tokenizer: tokenizer_lib.Tokenizer | None = None) -> list[Job]:
    """The shards to write: one per local file, or `num_shards` equal ranges of a tfds split."""
    proto = tokenizer.model_proto if tokenizer else b""
    if files:
        return [Job(os.path.join(output, f"{i:05d}-{os.path.basename(p)[:40]}.array_record"), path=p,
                    tokenizer_proto=proto) for i, p in enumerate(files)]
    shards = max(1, min(num_shards or 64, num_examples))
    bounds = np.linspace(0, num_examples, shards + 1).astype(int)
    return [Job(os.path.join(output, f"{i:05d}-of-{shards:05d}.array_record"), tfds=tfds, start=int(bounds[i]),
                stop=int(bounds[i + 1]), tokenizer_proto=proto) for i in range(shards)]


def run(jobs: list[Job], output: str, processes: int, tokenizer: tokenizer_lib.Tokenizer | None = None,
        progress=None) -> dict:
    """Writes the missing shards with `processes` workers, then the manifest; returns it."""
    from lm.data import corpus as corpus_lib  # noqa: PLC0415 (imports tfds: not in worker processes)

    storage.require_local(output, "--output", corpus_lib.ARRAY_RECORD_IS_LOCAL + " (and written with local writes)")
    os.makedirs(output, exist_ok=True)
    todo = [job for job in jobs if not os.path.exists(job.output)]
    if processes > 1 and len(todo) > 1:
        with multiprocessing.get_context("spawn").Pool(min(processes, len(todo))) as pool:
            for _ in pool.imap_unordered(write_shard, todo):
                if progress:
                    progress(1)
    else:
        for job in todo:
            write_shard(job)
            if progress:
                progress(1)
    manifest = {"kind": "tokens" if tokenizer else "raw",
                "tokenizer_fingerprint": tokenizer.fingerprint if tokenizer else "",
                "dtype": ("uint16" if tokenizer.vocab_size <= 1 << 16 else "uint32") if tokenizer else "",
                "shards": [os.path.basename(job.output) for job in jobs]}
    with open(os.path.join(output, MANIFEST + ".tmp"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(output, MANIFEST + ".tmp"), os.path.join(output, MANIFEST))
    return manifest


def read_manifest(folder: str) -> dict | None:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
