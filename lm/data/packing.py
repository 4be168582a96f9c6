"""The worker side of streaming input (lm/data/streaming.py): one slot's packing streams, the
rows they make, and the grain dataset a worker process iterates. Kept free of tfds and the
pre-pass pipeline so worker processes start quickly.
"""

from __future__ import annotations

import collections
import dataclasses

import grain
import numpy as np

from lm.config import ConfigError
from lm.data import text as text_lib
from lm.data import tokenizer as tokenizer_lib


def packed_row(window: np.ndarray, num_targets: int, eos_id: int, byte_lengths: np.ndarray) -> dict[str, np.ndarray]:
    """One training row from `window` [L + 1] of a token stream whose first `num_targets`
    targets are real (the rest padding): inputs/targets [L], segments numbered by EOS,
    positions restarting at each segment. The streaming pipeline packs through here too."""
    length = len(window) - 1
    inputs, targets = window[:-1], window[1:]
    real = np.arange(length) < num_targets
    starts = (inputs == eos_id) & real
    segment_ids = np.where(real, np.cumsum(starts) + (0 if starts[0] else 1), 0).astype(np.int32)
    index_in_row = np.arange(length)
    positions = index_in_row - np.maximum.accumulate(np.where(starts, index_in_row, 0))
    return {
        "inputs": inputs, "targets": targets, "positions": positions.astype(np.int32),
        "segment_ids": segment_ids, "weights": real.astype(np.float32),
        "target_bytes": np.where(real, byte_lengths[targets], 0).astype(np.int32),
    }


def documents_of(text: str, document_unit: str, lowercase: bool = False) -> list[str]:
    text = text_lib.clean(text.lower() if lowercase else text)
    if document_unit == "paragraph":
        return text_lib.split_paragraphs(text)
    return [text] if text else []


class Packer:
    """One slot's stream of one source: windows of `size` tokens, each `stride` after the last.
    State: (position of the record the next window starts in, token offset into that record)."""

    def __init__(self, tokens_of, slot: int, num_slots: int):
        self.tokens_of, self.slot, self.num_slots = tokens_of, slot, num_slots
        self.pieces: collections.deque = collections.deque()
        self.head, self.offset = 0, 0

    def state(self) -> list[int]:
        return [self.head, self.offset]

    def restore(self, state) -> None:
        self.head, self.offset = int(state[0]), int(state[1])
        self.pieces.clear()

    def window(self, size: int, stride: int) -> np.ndarray:
        available, empty_run = sum(len(p) for p in self.pieces) - self.offset, 0
        while available < size:
            piece = self.tokens_of(self.slot + self.num_slots * (self.head + len(self.pieces)))
            self.pieces.append(piece)
            available += len(piece)
            empty_run = empty_run + 1 if len(piece) == 0 else 0
            if empty_run > 10_000:
                raise ConfigError("10,000 records in a row have no text after cleaning: check the data source")
        joined = np.concatenate(list(self.pieces))[self.offset:self.offset + size]
        self.offset += stride
        while self.pieces and self.offset >= len(self.pieces[0]):
            self.offset -= len(self.pieces.popleft())
            self.head += 1
        return joined


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """How a slot turns its streams into rows: `make_row(window, rng) -> dict of arrays` for
    windows of `size` tokens taken every `stride` (the causal LM: L + 1 every L). Size 0: rows
    of whole records, `make_row(text_at, position, rng, tokenizer)` (text_at(k): the slot's
    record k, raw)."""
    size: int
    stride: int
    make_row: object  # picklable callable


class CausalRows:
    """Windows of L + 1 tokens -> the pre-pass path's packed rows (every target real)."""

    def __init__(self, seq_len: int, eos_id: int, byte_lengths: np.ndarray):
        self.seq_len, self.eos_id, self.byte_lengths = seq_len, eos_id, byte_lengths

    def spec(self) -> RowSpec:
        return RowSpec(self.seq_len + 1, self.seq_len, self)

    def __call__(self, window: np.ndarray, rng) -> dict[str, np.ndarray]:
        del rng
        return packed_row(window.astype(np.int32), self.seq_len, self.eos_id, self.byte_lengths)


class Slots:
    """Rows of a set of slots, one row per slot per round: the work of one worker (or of the
    process, with no workers). Picklable until first used (the tokenizer opens lazily)."""

    def __init__(self, corpus, spec: RowSpec, num_slots: int, seed: int):
        self.sources, self.weights = corpus.train, np.asarray(corpus.weights)
        self.model_proto, self.document_unit = corpus.tokenizer.model_proto, corpus.document_unit
        self.spec, self.num_slots, self.seed, self.lowercase = spec, num_slots, seed, corpus.lowercase
        self._tokenizer = None

    @property
    def tokenizer(self) -> tokenizer_lib.Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = tokenizer_lib.Tokenizer(self.model_proto)
        return self._tokenizer

    def record_index(self, source_index: int, position: int) -> int:
        """The record at `position` of source `source_index`'s endless order (a fresh permutation
        per epoch, computed per index)."""
        size = len(self.sources[source_index])
        epoch, index = divmod(position, size)
        if size == 1:
            return index
        key = (self.seed * 1_000_003 + source_index * 7919 + epoch * 104_729) % (1 << 31)
        return grain.experimental.index_shuffle(index, max_index=size - 1, seed=key, rounds=4)

    def tokens_of(self, source_index: int):
        source = self.sources[source_index]

        def tokens(position: int) -> np.ndarray:
            index = self.record_index(source_index, position)
            eos = self.tokenizer.eos_id
            if source.token_dtype:  # tokenized once by tools/prepare_data.py: one document a record
                return np.concatenate([[eos], source.tokens(index)]).astype(np.int32)
            documents = documents_of(source[index], self.document_unit, self.lowercase)
            return np.asarray([t for ids in self.tokenizer.encode_batch(documents, 1) for t in (eos, *ids)], np.int32)
        return tokens

    def packers(self, slot: int) -> list[Packer]:
        return [Packer(self.tokens_of(m), slot, self.num_slots) for m in range(len(self.sources))]

    def __getstate__(self):
        return {**self.__dict__, "_tokenizer": None}  # sentencepiece does not pickle; workers reopen it

    def row(self, slot: int, round_index: int, packers: list[Packer]) -> dict[str, np.ndarray]:
        """The row of `slot` at `round_index`."""
        rng, source = source_of(self.seed, slot, round_index, self.weights)
        if self.spec.size == 0:  # rows of whole records (BERT's sentence pairs): row t reads the slot's record t
            def text_at(position: int) -> str:
                return self.sources[source][self.record_index(source, slot + self.num_slots * position)]
            return self.spec.make_row(text_at, round_index, rng, self.tokenizer)
        window = packers[source].window(self.spec.size, self.spec.stride)
        return self.spec.make_row(window, rng)


def source_of(seed: int, slot: int, round_index: int, weights: np.ndarray):
    """(the row's generator, the source its row comes from): drawn with the mixture weights, so
    the host can count every slot's tokens per source without reading any data."""
    rng = np.random.default_rng([seed, slot, round_index])
    return rng, (int(rng.choice(len(weights), p=weights)) if len(weights) > 1 else 0)


class SlotRowsDataset(grain.IterDataset):
    """Each element: this worker's slots' rows of one round, stacked, plus `_slot` (their slot ids,
    which the iterator removes). grain's mp_prefetch gives each worker process a slice of the
    slots (set_slice); every slot is its own stream, so any partition yields the same rows."""

    def __init__(self, slot_ids: list[int], slots: Slots):
        super().__init__()
        self.slot_ids, self.slots = slot_ids, slots

    def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
        del sequential_slice
        self.slot_ids = self.slot_ids[sl]

    def __iter__(self):
        return _SlotRowsIterator(self.slot_ids, self.slots)


class _SlotRowsIterator(grain.DatasetIterator):
    def __init__(self, slot_ids: list[int], slots: Slots):
        super().__init__()
        self.slot_ids, self.slots, self.round = list(slot_ids), slots, 0
        self.packers = {slot: slots.packers(slot) for slot in self.slot_ids}

    def __next__(self):
        rows = [self.slots.row(slot, self.round, self.packers[slot]) for slot in self.slot_ids]
        self.round += 1
        if not rows:
            return {"_slot": np.zeros(0, np.int32)}
        batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
        batch["_slot"] = np.asarray(self.slot_ids, np.int32)
        return batch

    def get_state(self) -> dict:
        return {"round": self.round,
                "packers": {str(slot): [p.state() for p in packers] for slot, packers in self.packers.items()}}

    def set_state(self, state: dict) -> None:
        self.round = int(state["round"])
        for slot, packers in self.packers.items():
            for packer, saved in zip(packers, state["packers"][str(slot)]):
                packer.restore(saved)


