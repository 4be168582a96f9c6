"""Streaming input: documents are read, cleaned, tokenized and packed while training runs, with
no pre-pass over the corpus (lm/data/pipeline.py's path tokenizes every split before step 1).

Layout. A global batch has `B = train.batch_size` row slots. Slot b owns its own packing
stream per source: the documents at positions b, b + B, b + 2B, ... of that source's endless
record order (a fresh pseudo-random permutation per epoch, computed per index with
`grain.experimental.index_shuffle`, so no table of N indices is ever built). A stream is
`[EOS] doc [EOS] doc ...` and row k of it is `stream[k L : k L + L + 1]` with segments and
positions exactly as the pre-pass path's rows (packing.packed_row). With a mixture, row t of
slot b is taken from the source drawn with the mixture weights by a generator seeded with
(data.seed, b, t). Process p of P owns slots [p B / P, (p + 1) B / P) and reads only their
records, so processes read disjoint records and their rows together are exactly the
one-process batch.

Workers. Cleaning and tokenizing run in `data.num_workers` grain worker processes
(`IterDataset.mp_prefetch`), each owning some of this process's slots; 0 runs them in-process.
Each slot's state is two integers per source (the record its next row starts in, and the token
offset there), so the iterator's state (grain's, with every worker's slot states) is small, goes
into every checkpoint, and a resumed run re-tokenizes at most a few records to continue bitwise
where it stopped, whatever the number of workers. BERT's sentence pairs are built from whole
records instead (row t of a slot reads the slot's record t: lm/data/pairs.py, StreamedPairs).

The tokenizer of a streaming run without tokenizer.path is trained on a bounded sample
(`TOKENIZER_SAMPLE_CHARS`, evenly spaced records of each source in proportion to its weight).
Validation: the first `validation_tokens` tokens of each source's validation split in record
order (bounded and the same at every evaluation), packed like the pre-pass path's.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import grain
import numpy as np

from lm.config import ConfigError, DataConfig, TokenizerConfig
from lm.data import corpus as corpus_lib
from lm.data import batching, packing, records
from lm.data import tokenizer as tokenizer_lib

TOKENIZER_SAMPLE_CHARS = 4_000_000  # sentencepiece trains on this in a few seconds; the vocabulary is stable.
VALIDATION_TOKENS = 1 << 18  # per run: enough for a steady loss, read in about a second.


@dataclasses.dataclass(frozen=True)
class StreamingCorpus:
    """What a streaming task's prepare() returns. `validation_tokens` is a flat stream in memory,
    so the pre-pass path's evaluation code reads it unchanged."""
    tokenizer: tokenizer_lib.Tokenizer
    train: tuple[records.Source, ...]
    validation: tuple[records.Source, ...]
    weights: tuple[float, ...]
    validation_tokens: np.ndarray
    validation_bytes: int
    document_unit: str
    lowercase: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(source.name for source in self.train)


def _sample(sources, weights, document_unit: str, lowercase: bool):
    """Evenly spaced documents of each source, up to its share of TOKENIZER_SAMPLE_CHARS."""
    for source, weight in zip(sources, weights):
        if source.token_dtype:
            continue  # tokenized already: the run gives that tokenizer (checked in prepare)
        budget = TOKENIZER_SAMPLE_CHARS * weight
        count = max(1, min(len(source), int(budget // records.PIECE_BYTES) + 1))
        for index in np.linspace(0, len(source) - 1, count).astype(int):
            for document in packing.documents_of(source[int(index)], document_unit, lowercase):
                yield document[:int(budget)]
                budget -= len(document)
            if budget <= 0:
                break


def prepare(data: DataConfig, tokenizer_config: TokenizerConfig,
            validation_tokens: int = VALIDATION_TOKENS) -> StreamingCorpus:
    """Opens every source (local text becomes array_record records once), loads or trains the
    tokenizer on a bounded sample, and tokenizes the bounded validation stream."""
    entries = records.entries(data)
    splits = [records.open_splits(data, entry) for entry in entries]
    train = tuple(s[0] for s in splits)
    weights = tuple(entry.weight for entry in entries)
    identity = "stream:" + hashlib.sha256(f"{[s.identity for s in train]}|{weights}|{TOKENIZER_SAMPLE_CHARS}|"
                                          f"{data.document_unit}|{data.lowercase}".encode()).hexdigest()
    sample = _sample(train, weights, data.document_unit, data.lowercase)
    tokenizer = tokenizer_lib.load_or_train(tokenizer_config, sample, identity, corpus_lib.cache_root(data))
    for source in train:
        if source.token_dtype and source.tokenizer_fingerprint != tokenizer.fingerprint:
            raise ConfigError(f"data source {source.name!r} was tokenized by tools/prepare_data.py with another "
                              f"tokenizer: set tokenizer.path to the .model file given to prepare_data")
    stream, num_bytes = [np.asarray([tokenizer.eos_id], np.int32)], 0
    for (_, validation), weight in zip(splits, weights):
        budget = max(int(validation_tokens * weight), 2)
        for index in range(len(validation)):
            tokens, size = _record_tokens(validation, index, tokenizer, data)
            stream.append(tokens)
            num_bytes += size
            budget -= len(tokens)
            if budget <= 0:
                break
    return StreamingCorpus(tokenizer, train, tuple(s[1] for s in splits), weights,
                           np.concatenate(stream)[:validation_tokens + 1], num_bytes, data.document_unit,
                           data.lowercase)


def _record_tokens(source: records.Source, index: int, tokenizer, data: DataConfig) -> tuple[np.ndarray, int]:
    """A validation record as `doc EOS doc EOS ...`, and the UTF-8 bytes of its text."""
    if source.token_dtype:
        ids = source.tokens(index)
        return np.append(ids, tokenizer.eos_id).astype(np.int32), int(tokenizer.byte_lengths[ids].sum())
    documents = packing.documents_of(source[index], data.document_unit, data.lowercase)
    ids = [t for doc_ids in tokenizer.encode_batch(documents) for t in (*doc_ids, tokenizer.eos_id)]
    return np.asarray(ids, np.int32), sum(len(document.encode()) for document in documents)


class StreamIterator:
    """This process's batches: {field: [batch_size / process_count, ...]} in slot order, plus the
    tokens each source has given the whole global batch so far (`tokens_seen`, for the train
    metrics). get_state() / set_state() save and restore it exactly (grain's state, with the
    workers' slot states)."""

    def __init__(self, dataset: grain.IterDataset, num_workers: int, names: tuple[str, ...], tokens_per_row: int,
                 seed: int, weights: np.ndarray, global_batch: int):
        self.parts = max(num_workers, 1)
        if num_workers:
            from absl import flags  # noqa: PLC0415

            if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (outside tools/: defaults)
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                                       per_worker_buffer_size=2))
        self.iterator = iter(dataset)
        self.names, self.tokens_per_row = names, tokens_per_row
        self.seed, self.weights, self.global_batch = seed, weights, global_batch
        self.batches, self.tokens = 0, [0] * len(names)
        self.history = collections.deque(maxlen=64)  # (batches handed out, tokens per source then)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(self.iterator) for _ in range(self.parts)]
        parts = [p for p in parts if len(p["_slot"])]
        order = np.argsort(np.concatenate([p["_slot"] for p in parts]), kind="stable")
        batch = {key: np.concatenate([p[key] for p in parts])[order] for key in parts[0] if key != "_slot"}
        drawn = [packing.source_of(self.seed, slot, self.batches, self.weights)[1]
                 for slot in range(self.global_batch)]
        counts = np.bincount(drawn, minlength=len(self.names)) * self.tokens_per_row
        self.tokens = [int(a + b) for a, b in zip(self.tokens, counts)]
        self.batches += 1
        self.history.append((self.batches, list(self.tokens)))
        return batch

    def tokens_seen(self, batches: int) -> dict[str, int]:
        """Tokens per source in this process's first `batches` batches (None if that is too far back)."""
        for done, tokens in reversed(self.history):
            if done == batches:
                return dict(zip(self.names, tokens))
        return {}

    def get_state(self) -> dict:
        return {"grain": self.iterator.get_state(), "batches": self.batches, "tokens": self.tokens}

    def set_state(self, state: dict) -> None:
        self.iterator.set_state(state["grain"])
        self.batches, self.tokens = int(state["batches"]), [int(t) for t in state["tokens"]]
        self.history.clear()
        self.history.append((self.batches, list(self.tokens)))


def train_iterator(corpus: StreamingCorpus, row_spec: packing.RowSpec, global_batch: int, seed: int,
                   process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                   tokens_per_row: int = 0) -> StreamIterator:
    """Endless batches of this process's slots; `tokens_per_row` (default: the stride) counts
    toward each source's `tokens_seen`."""
    batching.check_batch(global_batch, process_count, "train.batch_size")
    per_process = global_batch // process_count
    slot_ids = list(range(process_index * per_process, (process_index + 1) * per_process))
    slots = packing.Slots(corpus, row_spec, global_batch, seed)
    return StreamIterator(packing.SlotRowsDataset(slot_ids, slots), min(num_workers, per_process), corpus.names,
                          tokens_per_row or row_spec.stride, seed, slots.weights, global_batch)


def enabled(data: DataConfig) -> bool:
    """Whether a run streams: data.streaming, or any data.mixture (mixtures only stream)."""
    return data.streaming or bool(data.mixture)


def validation_budget(seq_len: int, eval_batch: int, max_batches: int) -> int:
    """Validation tokens to read: what eval.max_batches can use, at most VALIDATION_TOKENS."""
    return min(VALIDATION_TOKENS, max_batches * eval_batch * seq_len + 1) if max_batches else VALIDATION_TOKENS
