"""T5's span corruption on a token stream: the encoder sees the text with spans replaced by
sentinels, the decoder writes the spans back, each after its sentinel.

  original: a b c d e f g h
  inputs:   a <s0> d e f <s1> h EOS
  targets:  <s0> b c <s1> g EOS

Two siblings share the windows and the row packing (WindowCorruptor): full reconstruction
(Denoiser: the same inputs, the whole original `a b c d e f g h EOS` as the target) and the
prefix LM (PrefixSplitter: no sentinels, a prefix in and the rest out).

Each example is one window of the tokenized stream (lm/data/pipeline.py), of the raw length
that fills exactly `input_len` encoder tokens, so rows need no padding. The noise is a pure
function of (seed, example index, epoch) through grain's random_map, so batches stay
reproducible and a resumed run sees the same corruption.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lm.config import ConfigError
from lm.data import seq2seq


@dataclasses.dataclass(frozen=True)
class SpanLengths:
    raw: int  # tokens of the original text per example
    noise: int  # of which masked
    spans: int  # number of masked spans (= sentinels used)
    inputs: int  # encoder tokens, EOS included
    targets: int  # decoder tokens, EOS included


def span_lengths(raw: int, noise_density: float, mean_span: float) -> SpanLengths:
    noise = min(max(int(round(raw * noise_density)), 1), raw - 1)
    spans = max(int(round(noise / mean_span)), 1)
    return SpanLengths(raw, noise, spans, raw - noise + spans + 1, noise + spans + 1)


def lengths_for_inputs(input_len: int, noise_density: float, mean_span: float) -> SpanLengths:
    """The longest raw window whose corrupted inputs fit `input_len` encoder tokens."""
    raw = input_len
    while span_lengths(raw + 1, noise_density, mean_span).inputs <= input_len:
        raw += 1
    while raw > 2 and span_lengths(raw, noise_density, mean_span).inputs > input_len:
        raw -= 1
    return span_lengths(raw, noise_density, mean_span)


def _random_partition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` positive integers summing to `total`, uniformly over such compositions."""
    cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False)) if parts > 1 else np.array([], int)
    return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(lengths: SpanLengths, rng: np.random.Generator) -> np.ndarray:
    """Boolean [raw]: True on masked tokens. Kept and masked runs alternate, kept first, so
    every span is preceded by kept text (the encoder always sees some context first)."""
    noise_runs = _random_partition(lengths.noise, lengths.spans, rng)
    kept_runs = _random_partition(lengths.raw - lengths.noise, lengths.spans, rng)
    runs = np.stack([kept_runs, noise_runs], axis=1).reshape(-1)
    is_noise = np.tile([False, True], lengths.spans)
    return np.repeat(is_noise, runs)


def corrupt(tokens: np.ndarray, mask: np.ndarray, sentinel_ids: np.ndarray, eos_id: int):
    """(inputs, targets) int32 for `tokens` with the spans of `mask` moved to the targets."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    span_index = np.cumsum(starts) - 1
    if span_index[-1] >= len(sentinel_ids):
        raise ConfigError(f"span corruption needs {span_index[-1] + 1} sentinel pieces but the tokenizer has "
                          f"{len(sentinel_ids)}: add <extra_id_0..N> to tokenizer.special_symbols")
    sentinel_at = np.where(starts, sentinel_ids[np.maximum(span_index, 0)], -1)
    inputs = np.where(starts, sentinel_at, tokens)[~mask | starts]
    targets = np.insert(tokens[mask], np.flatnonzero(starts[mask]), sentinel_at[starts])
    return (np.append(inputs, eos_id).astype(np.int32), np.append(targets, eos_id).astype(np.int32))


def reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinel_ids, eos_id: int) -> np.ndarray:
    """The original tokens from (inputs, targets): each sentinel in the inputs is replaced by
    what follows the same sentinel in the targets, up to the next sentinel. Only the final EOS
    of each ends it: a window of the token stream may hold the EOS between two documents."""
    sentinels = set(int(s) for s in sentinel_ids)

    def body(ids: np.ndarray) -> list[int]:
        ids = ids.tolist()
        return ids[:-1] if ids and ids[-1] == eos_id else ids

    spans, current = {}, None
    for token in body(targets):
        if token in sentinels:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    out = []
    for token in body(inputs):
        out.extend(spans.get(token, []) if token in sentinels else [token])
    return np.asarray(out, np.int32)


class Windows:
    """Raw windows of a token stream (random access): example i = stream[i * raw : (i + 1) * raw]."""

    def __init__(self, tokens: np.ndarray, raw: int):
        self.tokens, self.raw = tokens, raw
        self.length = len(tokens) // raw

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.tokens[index * self.raw:(index + 1) * self.raw], np.int32)


class WindowCorruptor:
    """Maps a raw window to one (inputs, targets) pair, and packs it as one seq2seq row
    (lm/data/seq2seq.py's layout) of fixed encoder and decoder lengths. Subclasses give `pair`."""

    def __init__(self, input_len: int, target_len: int, pad_id: int):
        self.input_len, self.target_len, self.pad_id = input_len, target_len, pad_id

    def pair(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return seq2seq.pack_rows([self.pair(tokens, rng)], self.input_len, self.target_len, self.pad_id)


class Corruptor(WindowCorruptor):
    """Span corruption: the spans of a noise mask move to the targets, each after its sentinel."""

    def __init__(self, lengths: SpanLengths, sentinel_ids: np.ndarray, eos_id: int, pad_id: int):
        super().__init__(lengths.inputs, lengths.targets, pad_id)
        self.lengths, self.sentinel_ids, self.eos_id = lengths, sentinel_ids, eos_id

    def pair(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return corrupt(tokens, noise_mask(self.lengths, rng), self.sentinel_ids, self.eos_id)


class Denoiser(Corruptor):
    """Full reconstruction: span corruption's inputs, and the whole original window (+ EOS) as
    the target. The decoder writes a full-length output aligned with the whole input, as
    translation needs, instead of short sentinel spans (MASS/BART-style; the T5 paper's
    "reconstruct the original" variant). Rows are `lengths.raw + 1` decoder tokens."""

    def __init__(self, lengths: SpanLengths, sentinel_ids: np.ndarray, eos_id: int, pad_id: int):
        super().__init__(lengths, sentinel_ids, eos_id, pad_id)
        self.target_len = lengths.raw + 1

    def pair(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inputs, _ = super().pair(tokens, rng)
        return inputs, np.append(tokens, self.eos_id).astype(np.int32)


class PrefixSplitter(WindowCorruptor):
    """The prefix-LM alternative: a window split at a uniformly random point; the encoder reads
    the prefix, the decoder writes the rest. Rows are `raw + 1` tokens on both sides, padded."""

    def __init__(self, raw: int, eos_id: int, pad_id: int):
        super().__init__(raw + 1, raw + 1, pad_id)
        self.raw, self.eos_id = raw, eos_id

    def pair(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cut = int(rng.integers(1, len(tokens)))
        return (np.append(tokens[:cut], self.eos_id).astype(np.int32),
                np.append(tokens[cut:], self.eos_id).astype(np.int32))
