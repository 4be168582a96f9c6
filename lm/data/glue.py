"""Labelled sentence(-pair) classification data: SST-2, MRPC and RTE from local files
(<data dir>/<task>: data.data_dir or $LM_DATA_DIR) or from tfds's `glue/<task>` by name, tokenized into BERT inputs.

Splits are "train" and "validation". Local files: SST-2's stsa.binary.{train,dev}; MRPC's
msr_paraphrase_{train,test}.txt (the MSR test split serves as validation: GLUE's own dev set
is a slice of the train file, which this copy does not mark); RTE's {train,val}.jsonl. Labels
follow GLUE: SST-2 1 = positive, MRPC 1 = paraphrase, RTE 0 = entailment.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from lm import storage
from lm.config import ConfigError, FinetuneConfig
from lm.data import corpus as corpus_lib
from lm.data import pairs

NUM_CLASSES = {"sst2": 2, "mrpc": 2, "rte": 2}
_LOCAL_FILES = {
    "sst2": {"train": "stsa.binary.train", "validation": "stsa.binary.dev"},
    "mrpc": {"train": "msr_paraphrase_train.txt", "validation": "msr_paraphrase_test.txt"},
    "rte": {"train": "train.jsonl", "validation": "val.jsonl"},
}
_TFDS_KEYS = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


@dataclasses.dataclass(frozen=True)
class LabelledSplit:
    first: list[str]
    second: list[str] | None  # None for single-sentence tasks
    labels: np.ndarray  # int32 [N]


def data_dir(config: FinetuneConfig, root: str | None = None) -> Path:
    """finetune.data_dir, else <root>/<task> (root: data.data_dir or $LM_DATA_DIR)."""
    if config.data_dir:
        return Path(corpus_lib.resolve_path(config.data_dir, root))
    root = corpus_lib.data_dir() if root is None else root
    return Path(root or "<LM_DATA_DIR unset>") / config.task


def _read_local(task: str, path: Path) -> LabelledSplit:
    if not path.exists():
        raise ConfigError(f"{path} does not exist: {task} comes from {corpus_lib.DATA_SOURCES[task]}; put its "
                          f"files ({', '.join(_LOCAL_FILES[task].values())}) in <folder>/{task} and set "
                          f"LM_DATA_DIR=<folder> or --config.data.data_dir=<folder> (or finetune.data_dir, or "
                          f"finetune.tfds_name=glue/{task})")
    if task == "sst2":
        rows = [line.rstrip("\n").split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return LabelledSplit([r[1] for r in rows], None, np.asarray([int(r[0]) for r in rows], np.int32))
    if task == "mrpc":
        with storage.open_text(path, "utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        rows = [r for r in rows if len(r) == 5]
        return LabelledSplit([r[3] for r in rows], [r[4] for r in rows], np.asarray([int(r[0]) for r in rows], np.int32))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = [0 if r["label"] in ("entailment", 0) else 1 for r in records]
    return LabelledSplit([r["premise"] for r in records], [r["hypothesis"] for r in records],
                         np.asarray(labels, np.int32))


def _read_tfds(config: FinetuneConfig, split: str, allow_download: bool) -> LabelledSplit:
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from tensorflow_datasets.text import glue  # noqa: F401, PLC0415 (registers glue/* without TensorFlow)

    try:
        source = tfds.data_source(config.tfds_name, split=split, download=allow_download)
    except (KeyError, ValueError, FileNotFoundError, AssertionError) as error:
        raise ConfigError(f"tfds dataset {config.tfds_name!r} (split {split!r}) is not prepared: prepare it in "
                          f"array_record format or set --config.data.allow_download=true (needs internet). "
                          f"({error})") from error
    key_a, key_b = _TFDS_KEYS[config.task]
    records = [source[i] for i in range(len(source))]
    text = lambda value: value.decode("utf-8") if isinstance(value, bytes) else str(value)  # noqa: E731
    return LabelledSplit([text(r[key_a]) for r in records], [text(r[key_b]) for r in records] if key_b else None,
                         np.asarray([int(r["label"]) for r in records], np.int32))


def load(config: FinetuneConfig, split: str, allow_download: bool = False,
         root: str | None = None) -> LabelledSplit:
    """One split; local files are read from data_dir(config, root)."""
    if config.tfds_name:
        return _read_tfds(config, split, allow_download)
    return _read_local(config.task, data_dir(config, root) / _LOCAL_FILES[config.task][split])


def lowercased(split: LabelledSplit) -> LabelledSplit:
    """The split with its texts lowercased (data.lowercase: an uncased model's inputs)."""
    return dataclasses.replace(split, first=[t.lower() for t in split.first],
                               second=None if split.second is None else [t.lower() for t in split.second])


def truncate_pair(a: np.ndarray, b: np.ndarray | None, max_tokens: int):
    """Drops tokens from the end of the longer text until both fit `max_tokens`."""
    if b is None:
        return a[:max_tokens], None
    if len(a) + len(b) > max_tokens:
        keep_a = min(len(a), max(max_tokens - len(b), max_tokens // 2))
        a, b = a[:keep_a], b[:max_tokens - keep_a]
    return a, b


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """Model-ready arrays: inputs, type_ids, segment_ids [N, L]; labels [N]."""
    inputs: np.ndarray
    type_ids: np.ndarray
    segment_ids: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if index >= len(self.labels):  # evaluation padding: counts nowhere
            zeros = np.zeros_like(self.inputs[0])
            return {"inputs": zeros, "type_ids": zeros, "segment_ids": zeros, "labels": np.int32(0),
                    "weights": np.float32(0.0)}
        return {"inputs": self.inputs[index], "type_ids": self.type_ids[index],
                "segment_ids": self.segment_ids[index], "labels": self.labels[index], "weights": np.float32(1.0)}


def encode(split: LabelledSplit, tokenizer, seq_len: int) -> EncodedSplit:
    ids = pairs.SpecialIds.from_tokenizer(tokenizer)
    first = pairs.encode_sentences(tokenizer, split.first)
    second = pairs.encode_sentences(tokenizer, split.second) if split.second is not None else [None] * len(first)
    max_tokens = seq_len - (3 if split.second is not None else 2)
    rows = []
    for a, b in zip(first, second):
        a, b = truncate_pair(np.asarray(a, np.int32), None if b is None else np.asarray(b, np.int32), max_tokens)
        rows.append(pairs.encode_pair(a, b, seq_len, ids))
    inputs, type_ids, segment_ids = (np.stack(column) for column in zip(*rows))
    return EncodedSplit(inputs, type_ids, segment_ids, split.labels)

