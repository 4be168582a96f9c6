"""Tokenized corpora and the batches a language model trains and evaluates on.

Every document is tokenized once into a flat token stream, `[EOS] doc0 [EOS] doc1 ... [EOS]`,
cached on disk (keyed by corpus and tokenizer) and memory-mapped. Training examples are
fixed-length windows of that stream, so packing wastes no token:

  example i = stream[i * L : i * L + L + 1]; inputs = [:-1], targets = [1:]

Each EOS opens a new segment (document); `segment_ids` number the segments of a row and
`positions` restart at each, so attention never crosses documents, and every token is a
target exactly once per epoch. Batches are a pure function of (seed, step, process): grain
shuffles the windows per epoch, each process reads only its own rows, and the iterator's
state (one index) is saved in every checkpoint, so a resumed run sees the batches it would
have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os

import numpy as np

from lm.config import ConfigError, DataConfig, TokenizerConfig
from lm.data import batching
from lm.data import corpus as corpus_lib
from lm.data import text as text_lib
from lm.data import tokenizer as tokenizer_lib

_TOKEN_CACHE_VERSION = "1"  # bump when cleaning or the stream layout changes.
_ENCODE_CHUNK = 2048  # documents per call to sentencepiece (which threads inside a call).


@dataclasses.dataclass(frozen=True)
class Corpus:
    tokenizer: tokenizer_lib.Tokenizer
    train_tokens: np.ndarray  # flat stream, memory-mapped
    validation_tokens: np.ndarray
    validation_bytes: int  # UTF-8 bytes of the validation text


def _cleaned(source: corpus_lib.TextSource):
    for document in source:
        document = text_lib.clean(document)
        if document:
            yield document


def _tokenize_cached(source: corpus_lib.TextSource, tokenizer: tokenizer_lib.Tokenizer, cache_dir: str):
    """Returns (memory-mapped token stream, UTF-8 bytes of the text) for one split."""
    key = hashlib.sha256(f"{source.identity}|{tokenizer.fingerprint}|{_TOKEN_CACHE_VERSION}".encode()).hexdigest()[:20]
    base = os.path.join(cache_dir, "tokens", key)
    if not os.path.exists(base + ".json"):
        os.makedirs(os.path.dirname(base), exist_ok=True)
        dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.uint32
        tmp = f"{base}.bin.tmp{os.getpid()}"
        count, num_bytes = 0, 0
        with open(tmp, "wb") as out:
            for row, row_bytes in _stream_rows(_cleaned(source), tokenizer, dtype):
                out.write(row.tobytes())
                count, num_bytes = count + len(row), num_bytes + row_bytes
        if count < 3:
            raise ConfigError(f"{source.identity} has no text after cleaning: give a corpus with text in it")
        os.replace(tmp, base + ".bin")
        with open(base + ".json.tmp", "w") as f:
            json.dump({"dtype": np.dtype(dtype).name, "length": count, "bytes": num_bytes}, f)
        os.replace(base + ".json.tmp", base + ".json")  # written last: marks the cache complete.
    with open(base + ".json") as f:
        meta = json.load(f)
    return np.memmap(base + ".bin", dtype=meta["dtype"], mode="r", shape=(meta["length"],)), meta["bytes"]


def _stream_rows(documents, tokenizer: tokenizer_lib.Tokenizer, dtype):
    """The stream's layout, `[EOS] doc0 [EOS] doc1 ... [EOS]`, as pieces: ([EOS, *ids], UTF-8
    bytes of the document) per cleaned document, then ([EOS], 0)."""
    pending = []

    def encoded():
        for document, ids in zip(pending, tokenizer.encode_batch(pending)):
            yield np.asarray([tokenizer.eos_id, *ids], dtype), len(document.encode())
        pending.clear()

    for document in documents:
        pending.append(document)
        if len(pending) == _ENCODE_CHUNK:
            yield from encoded()
    yield from encoded()
    yield np.asarray([tokenizer.eos_id], dtype), 0


def token_stream(documents, tokenizer: tokenizer_lib.Tokenizer) -> tuple[np.ndarray, int]:
    """(token stream, UTF-8 bytes) of cleaned documents, in memory, laid out as training's
    cached streams are (tools/evaluate.py scores other text with it)."""
    rows = list(_stream_rows(documents, tokenizer, np.int32))
    return np.concatenate([row for row, _ in rows]), sum(num_bytes for _, num_bytes in rows)


@contextlib.contextmanager
def _cache_lock(cache_dir: str):
    """Serialises preparation across processes sharing a cache (several local processes, or
    hosts on one filesystem): the first builds, the others then find the finished cache."""
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, ".prepare.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(data: DataConfig, tokenizer_config: TokenizerConfig) -> Corpus:
    """Opens both splits, loads or trains the tokenizer, and tokenizes (cached)."""
    cache_dir = corpus_lib.cache_root(data)
    with _cache_lock(cache_dir):
        return _prepare(data, tokenizer_config, cache_dir)


def _prepare(data: DataConfig, tokenizer_config: TokenizerConfig, cache_dir: str) -> Corpus:
    train_source = corpus_lib.open_split(data, data.train_split)
    validation_source = corpus_lib.open_split(data, data.eval_split)
    tokenizer = tokenizer_lib.load_or_train(tokenizer_config, _cleaned(train_source), train_source.identity, cache_dir)
    train_tokens, _ = _tokenize_cached(train_source, tokenizer, cache_dir)
    validation_tokens, validation_bytes = _tokenize_cached(validation_source, tokenizer, cache_dir)
    return Corpus(tokenizer, train_tokens, validation_tokens, validation_bytes)


class Windows:
    """Random-access examples: window i of the token stream, with segments and positions.

    With `keep_partial` the last, shorter window counts too; indices past the real windows are
    all-padding rows (segment 0, weight 0): evaluation pads its last batch with them."""

    def __init__(self, tokens: np.ndarray, seq_len: int, eos_id: int, pad_id: int, byte_lengths: np.ndarray,
                 keep_partial: bool = False):
        self.tokens, self.seq_len, self.eos_id, self.pad_id = tokens, seq_len, eos_id, pad_id
        self.byte_lengths = byte_lengths
        full, remainder = divmod(len(tokens) - 1, seq_len)
        self.num_real = full + (1 if keep_partial and remainder else 0)
        self.length = self.num_real

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        length = self.seq_len
        window = np.full(length + 1, self.pad_id, np.int32)
        if index < self.num_real:
            piece = self.tokens[index * length: index * length + length + 1]
            window[:len(piece)] = piece
            num_targets = len(piece) - 1
        else:
            num_targets = 0
        inputs, targets = window[:-1], window[1:]
        real = np.arange(length) < num_targets
        starts = (inputs == self.eos_id) & real
        segment_ids = np.where(real, np.cumsum(starts) + (0 if starts[0] else 1), 0).astype(np.int32)
        index_in_row = np.arange(length)
        positions = index_in_row - np.maximum.accumulate(np.where(starts, index_in_row, 0))
        return {
            "inputs": inputs, "targets": targets, "positions": positions.astype(np.int32),
            "segment_ids": segment_ids, "weights": real.astype(np.float32),
            "target_bytes": np.where(real, self.byte_lengths[targets], 0).astype(np.int32),
        }


def train_iterator(corpus: Corpus, seq_len: int, global_batch: int, seed: int, process_index: int = 0,
                   process_count: int = 1, prefetch: int = 4):
    """Endless training batches for this process: {field: [global_batch / processes, seq_len]}.

    A grain DatasetIterator: `get_state()` / `set_state()` save and restore its position."""
    tok = corpus.tokenizer
    windows = Windows(corpus.train_tokens, seq_len, tok.eos_id, tok.pad_id, tok.byte_lengths)
    if len(windows) < global_batch:
        raise ConfigError(f"the training split has {len(windows)} sequences of {seq_len} tokens, fewer than "
                          f"train.batch_size={global_batch}: give more text or lower the batch size or data.seq_len")
    return iter(batching.batched(windows, global_batch, process_index, process_count, seed=seed, prefetch=prefetch))


def eval_batches(corpus: Corpus, seq_len: int, global_batch: int, max_batches: int = 0, process_index: int = 0,
                 process_count: int = 1):
    """One pass over the validation split for this process, padded to whole batches."""
    return stream_batches(corpus.validation_tokens, corpus.tokenizer, seq_len, global_batch, max_batches,
                          process_index, process_count)


def stream_batches(tokens: np.ndarray, tok: tokenizer_lib.Tokenizer, seq_len: int, global_batch: int,
                   max_batches: int = 0, process_index: int = 0, process_count: int = 1):
    """One pass over a token stream in windows of `seq_len` (the last one partial), for this
    process, padded to whole batches of `global_batch` rows; `max_batches` > 0 stops early."""
    windows = Windows(tokens, seq_len, tok.eos_id, tok.pad_id, tok.byte_lengths, keep_partial=True)
    return batching.eval_pass(windows, windows.num_real, global_batch, max_batches, process_index, process_count)
