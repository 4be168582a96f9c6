"""Text corpora as tfds datasets: local text files through a tfds builder, or any registered
tfds text dataset by name. Both are read back as random-access array_record sources, which
need no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from lm.config import ConfigError, DataConfig
from lm.data import text as text_lib

REPO_ROOT = Path(__file__).resolve().parents[2]
tfds.disable_progress_bar()


def resolve_path(path: str) -> str:
    """A relative path is taken from the working directory, else from the repository root
    (so the shipped corpus is found from anywhere)."""
    if os.path.isabs(path) or glob.glob(path):
        return path
    candidate = REPO_ROOT / path
    return str(candidate) if glob.glob(str(candidate)) else path


def expand_files(spec: str, field: str) -> list[str]:
    """Comma-separated files or globs -> sorted existing files, or a ConfigError naming `field`."""
    files: list[str] = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        matches = sorted(glob.glob(resolve_path(pattern)))
        if not matches:
            raise ConfigError(f"{field}: no file matches {pattern!r} (working directory {os.getcwd()}); "
                              f"give existing text files or globs, comma separated")
        files.extend(m for m in matches if os.path.isfile(m))
    if not files:
        raise ConfigError(f"{field}={spec!r} names no files")
    return files


class LocalTextConfig(tfds.core.BuilderConfig):
    """Which files make which split, and what counts as a document."""

    def __init__(self, *, train_files: Sequence[str], validation_files: Sequence[str],
                 validation_fraction: float, document_unit: str):
        fingerprint = hashlib.sha256()
        for split, files in (("train", train_files), ("validation", validation_files)):
            for path in files:
                stat = os.stat(path)
                fingerprint.update(f"{split}:{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        fingerprint.update(f"{validation_fraction}:{document_unit}".encode())
        super().__init__(name=fingerprint.hexdigest()[:16], version="1.0.0",
                         description=f"{len(train_files)} local text file(s)")
        self.train_files, self.validation_files = list(train_files), list(validation_files)
        self.validation_fraction, self.document_unit = validation_fraction, document_unit


class LocalText(tfds.core.GeneratorBasedBuilder):
    """Plain-text files on local disk as a tfds dataset with `train` and `validation` splits.

    Examples are {"text": cleaned document, "doc_id": order in the corpus}. Without explicit
    validation files, the last `validation_fraction` of the text (cut at a line boundary) is
    the validation split, the customary split for a single-file corpus.
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS: list = []

    def _info(self):
        features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "doc_id": tfds.features.Scalar(np.int64)})
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        del dl_manager  # local files only: nothing is downloaded.
        cfg = self.builder_config
        train = self._documents(cfg.train_files)
        if cfg.validation_files:
            validation = self._documents(cfg.validation_files)
        else:
            train, validation = _hold_out_tail(train, cfg.validation_fraction, cfg.document_unit == "file")
        for name, documents in (("train", train), ("validation", validation)):
            if not documents:
                raise ConfigError(f"the {name} split of {', '.join(cfg.train_files)} is empty after cleaning: "
                                  f"give a corpus with text in it (or change data.validation_fraction)")
        return {"train": self._generate_examples(train), "validation": self._generate_examples(validation)}

    def _documents(self, files: Sequence[str]) -> list[str]:
        return read_documents(files, self.builder_config.document_unit)

    def _generate_examples(self, documents: Sequence[str]) -> Iterator:
        for doc_id, document in enumerate(documents):
            yield doc_id, {"text": document, "doc_id": doc_id}


def read_documents(files: Sequence[str], document_unit: str = "file") -> list[str]:
    """The cleaned documents of local text files: one a file, or one a paragraph (blank-line
    separated) with document_unit="paragraph". Empty documents are dropped."""
    documents = []
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open  # e.g. Multi30k's train.de.gz as monolingual text
        with opener(path, "rb") as f:
            content = text_lib.clean(text_lib.decode_utf8(f.read()))
        if document_unit == "paragraph":
            documents.extend(text_lib.split_paragraphs(content))
        elif content:
            documents.append(content)
    return documents


def _hold_out_tail(documents: list[str], fraction: float, split_documents: bool) -> tuple[list[str], list[str]]:
    """Splits the concatenated documents at `1 - fraction` of their characters. With
    `split_documents` the document containing the cut is divided at the next line boundary
    (a single-file corpus); otherwise the cut moves to the next document boundary."""
    total = sum(len(d) for d in documents)
    cut, seen = int(total * (1 - fraction)), 0
    for i, document in enumerate(documents):
        if seen + len(document) > cut:
            line_end = document.find("\n", cut - seen) if split_documents else -1
            if line_end == -1:
                return documents[:i + 1], documents[i + 1:]
            head, tail = document[:line_end].strip(), document[line_end:].strip()
            return documents[:i] + [head], ([tail] if tail else []) + documents[i + 1:]
        seen += len(document)
    return documents, []


@dataclasses.dataclass(frozen=True)
class TextSource:
    """A random-access sequence of documents (str) for one split, and a stable identity
    (what the token cache is keyed by)."""
    documents: Sequence
    text_key: str
    identity: str

    def __len__(self):
        return len(self.documents)

    def __iter__(self):
        for i in range(len(self.documents)):
            yield self[i]

    def __getitem__(self, index: int) -> str:
        return text_lib.decode_utf8(self.documents[index][self.text_key])


def cache_root(config: DataConfig) -> str:
    return config.cache_dir or os.environ.get("LM_CACHE_DIR") or os.path.expanduser("~/.cache/lm")


def open_split(config: DataConfig, split: str) -> TextSource:
    """Opens one split ("train" or "validation" for local files; the tfds split name for a
    registered dataset), building the local-text dataset on first use."""
    if config.tfds_name:
        return _open_registered(config, split)
    train_files = expand_files(config.train_files, "data.train_files")
    validation_files = expand_files(config.validation_files, "data.validation_files") if config.validation_files else []
    builder_config = LocalTextConfig(train_files=train_files, validation_files=validation_files,
                                     validation_fraction=config.validation_fraction,
                                     document_unit=config.document_unit)
    builder = LocalText(config=builder_config, data_dir=os.path.join(cache_root(config), "tfds"),
                        file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    name = {"train": "train", config.eval_split: "validation"}.get(split, split)
    source = builder.as_data_source(split=name)
    return TextSource(source, "text", f"local:{builder_config.name}:{name}")


def _open_registered(config: DataConfig, split: str) -> TextSource:
    data_dir = config.tfds_data_dir or None
    builder = tfds.builder(config.tfds_name, data_dir=data_dir, file_format="array_record")
    try:
        source = builder.as_data_source(split=split)
    except (KeyError, ValueError, FileNotFoundError, NotImplementedError) as error:
        if not config.allow_download:
            raise ConfigError(
                f"tfds dataset {config.tfds_name!r} (split {split!r}) is not prepared in {builder.data_dir}: "
                f"prepare it there in array_record format, or set --config.data.allow_download=true to "
                f"download it now (needs internet). ({error})") from error
        builder.download_and_prepare()
        source = builder.as_data_source(split=split)
    if len(source) == 0:
        raise ConfigError(f"tfds dataset {config.tfds_name!r} split {split!r} has no examples")
    return TextSource(source, config.text_key, f"tfds:{config.tfds_name}:{builder.version}:{split}")
