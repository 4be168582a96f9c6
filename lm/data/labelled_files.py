"""The user's own labelled files for classification: CSV, TSV or JSON lines.

`read_split(spec, text_fields, label_field, names)`: `spec` is a comma-separated list of files or
glob patterns (finetune.train_files / validation_files / test_files), the format is told by the
extension (.csv and .tsv need a header row naming the fields; .jsonl / .json: one object a line),
`text_fields` names one field (single text) or two (a text pair), `label_field` the label.

Labels are any strings (or numbers). Their names come from the training split: sorted, numbers in
numeric order (so "0", "1", "2" keep their ids), and stored with the run, so ids mean the same at
evaluation and export. A validation or test label the training split never had is refused.
"""

from __future__ import annotations

import csv
import json
from typing import Sequence

import numpy as np

from lm import storage
from lm.config import ConfigError
from lm.data import corpus as corpus_lib
from lm.data.glue import LabelledSplit

_DELIMITERS = {".csv": ",", ".tsv": "\t"}


def _records(path: str, field: str):
    """(line number, record dict) of one file."""
    suffix = next((s for s in (".csv", ".tsv", ".jsonl", ".json") if path.endswith(s)), None)
    if suffix is None:
        raise ConfigError(f"{field}: {path} is not .csv, .tsv, .jsonl or .json: name the format by the extension")
    with storage.open_text(path, "utf-8-sig", newline="") as f:
        if suffix in _DELIMITERS:
            yield from enumerate(csv.DictReader(f, delimiter=_DELIMITERS[suffix]), 2)
            return
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except ValueError as error:
                    raise ConfigError(f"{path}:{number} is not a JSON object ({error})") from None


def read_raw(spec: str, field: str, text_fields: Sequence[str], label_field: str, root: str | None = None):
    """Texts (one list per text field) and label strings of every record of `spec`'s files."""
    if not 1 <= len(text_fields) <= 2:
        raise ConfigError(f"finetune.text_fields={','.join(text_fields)!r}: name one text field or two (a pair)")
    texts, labels = [[] for _ in text_fields], []
    for path in corpus_lib.expand_files(spec, field, root):
        for number, record in _records(path, field):
            missing = [k for k in (*text_fields, label_field) if record.get(k) is None]
            if missing:
                raise ConfigError(f"{path}:{number} has no field {missing[0]!r} (it has {', '.join(record)}): set "
                                  f"finetune.text_fields and finetune.label_field to its fields")
            for column, key in zip(texts, text_fields):
                column.append(str(record[key]))
            labels.append(str(record[label_field]).strip())
    if not labels:
        raise ConfigError(f"{field}={spec!r} holds no records")
    return texts, labels


def label_names(labels: Sequence[str]) -> list[str]:
    def key(name: str):
        try:
            return (0, float(name), name)
        except ValueError:
            return (1, 0.0, name)
    return sorted(set(labels), key=key)


def read_split(spec: str, field: str, text_fields: Sequence[str], label_field: str,
               names: Sequence[str] | None = None, root: str | None = None) -> tuple[LabelledSplit, list[str]]:
    """The split and the label names (`names` given: the training split's, which must cover it)."""
    texts, labels = read_raw(spec, field, text_fields, label_field, root)
    names = list(names) if names is not None else label_names(labels)
    ids = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        raise ConfigError(f"{field}={spec!r} has labels the training split does not have: {unknown[:5]} "
                          f"(training labels: {names[:10]})")
    split = LabelledSplit(texts[0], texts[1] if len(texts) == 2 else None,
                          np.asarray([ids[label] for label in labels], np.int32))
    return split, names
