"""Text-to-text examples (input text -> target text) as packed encoder-decoder rows.

Sources: local JSON lines (`input_key` and `target_key` fields; a test split may name several
reference fields, `test_reference_keys`), local parallel text files
named with a `{key}` placeholder (line i of one file pairs with line i of the other; `.gz`
is read as gzip), or a tfds dataset by name (its features `input_key` and `target_key`).

A row packs several examples: encoder row and decoder row hold the same examples under the
same segment ids (1, 2, ...; 0 is padding), positions restart at every example, and the
decoder input of each example is its target shifted right behind the pad id (T5's start
token). Row layout, every field int32 [length] except the float32 weights:

  encoder_inputs, encoder_segment_ids, encoder_positions                    [input_len]
  decoder_inputs, decoder_targets, decoder_segment_ids, decoder_positions,
  decoder_weights                                                           [target_len]

Packing is planned once (greedily, in a seeded shuffled order); grain then shuffles the rows
per epoch, so the iterator's state stays one index and a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

from lm import storage
from lm.config import Config, ConfigError
from lm.data import corpus as corpus_lib
from lm.data import text as text_lib
from lm.data import tokenizer as tokenizer_lib

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Pairs:
    """One tokenized split: ids end with EOS and are truncated to the row lengths."""
    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    texts: list[tuple[str, str]]  # (input, target) as read, for decoding and scoring


@dataclasses.dataclass(frozen=True)
class PairCorpus:
    tokenizer: tokenizer_lib.Tokenizer
    train: Pairs
    validation: Pairs


def _read_local(spec: str, field: str, keys: Sequence[str], root: str) -> list[tuple[str, ...]]:
    """One tuple per example: the text of each of `keys` (input first, then its target(s))."""
    examples = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        if "{key}" in pattern:
            sides = []
            for key in keys:
                (path,) = corpus_lib.expand_files(pattern.replace("{key}", key), field, root)[:1]
                with storage.open_text(path) as f:
                    sides.append(f.read().split("\n"))
            if all(side and side[-1] == "" for side in sides):
                sides = [side[:-1] for side in sides]
            if len({len(side) for side in sides}) != 1:
                counts = ", ".join(f"{len(side)} {key!r}" for side, key in zip(sides, keys))
                raise ConfigError(f"{field}: {pattern!r} gives {counts} lines; parallel files must align line by line")
            examples.extend(zip(*sides))
            continue
        for path in corpus_lib.expand_files(pattern, field, root):
            with storage.open_text(path) as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    missing = [k for k in keys if k not in record]
                    if missing:
                        raise ConfigError(f"{path}:{number} has no field {missing[0]!r} (it has {', '.join(record)}): "
                                          f"set seq2seq.input_key and seq2seq.target_key (seq2seq.test_reference_keys "
                                          f"for the test split) to its fields")
                    examples.append(tuple(record[k] for k in keys))
    return examples


_BUILDER_PACKAGES = ("translate", "summarization", "text", "question_answering")


def _register_builder(name: str) -> None:
    """This tfds release imports its older dataset modules (wmt*, cnn_dailymail, ...) lazily,
    so `tfds.builder` does not know them by name until their module is imported."""
    import importlib  # noqa: PLC0415

    module = name.split("/")[0].split(":")[0]
    for package in _BUILDER_PACKAGES:
        try:
            importlib.import_module(f"tensorflow_datasets.{package}.{module}")
            return
        except ImportError:
            continue


def _read_tfds(config: Config, split: str) -> list[tuple[str, str]]:
    data, s2s = config.data, config.seq2seq
    _register_builder(data.tfds_name)
    name = {"train": data.train_split, "validation": data.eval_split}.get(split, split)
    sources = [corpus_lib.TextSource(corpus_lib.open_split(data, name).documents, key, "") for key in
               (s2s.input_key, s2s.target_key)]
    return list(zip(sources[0], sources[1]))


def read_examples(config: Config, split: str) -> list[tuple[str, ...]]:
    """[(input text, reference text, ...)] of a split ("train", "validation", "test"), cleaned,
    with the input prefix prepended; examples with an empty input or first reference are
    dropped. One reference (target_key), except the test split with seq2seq.test_reference_keys."""
    data, s2s = config.data, config.seq2seq
    references = [k.strip() for k in s2s.test_reference_keys.split(",") if k.strip()] if split == "test" else []
    if data.tfds_name:
        if references:
            raise ConfigError("seq2seq.test_reference_keys reads local test files; with data.tfds_name leave it empty")
        raw = _read_tfds(config, split)
    else:
        spec, field = {"train": (data.train_files, "data.train_files"),
                       "validation": (data.validation_files, "data.validation_files"),
                       "test": (s2s.test_files, "seq2seq.test_files")}[split]
        if not spec:
            raise ConfigError(f"{field} is empty: the {split} split of a seq2seq task needs its own files "
                              f"(JSON lines, or parallel files with a {{key}} placeholder)")
        raw = _read_local(spec, field, [s2s.input_key, *(references or [s2s.target_key])],
                          corpus_lib.data_dir(data))
    examples = [tuple(text_lib.clean(text_lib.decode_utf8(text)) for text in example) for example in raw]
    examples = [(s2s.input_prefix + example[0], *example[1:]) for example in examples if example[0] and example[1]]
    if not examples:
        raise ConfigError(f"the {split} split has no (input, target) pairs with text on both sides")
    return examples


def read_split(config: Config, split: str) -> list[tuple[str, str]]:
    """[(input text, target text)]: `read_examples` with the first reference as the target."""
    return [(example[0], example[1]) for example in read_examples(config, split)]


def tokenize(pairs: Sequence[tuple[str, str]], tokenizer, input_len: int, target_len: int) -> Pairs:
    inputs = tokenizer.encode_batch([a for a, _ in pairs])
    targets = tokenizer.encode_batch([b for _, b in pairs])

    def finish(ids, length):
        return np.asarray(ids[:length - 1] + [tokenizer.eos_id], np.int32)

    return Pairs([finish(i, input_len) for i in inputs], [finish(t, target_len) for t in targets], list(pairs))


def load_tokenizer(config: Config, train_pairs) -> tokenizer_lib.Tokenizer:
    """tokenizer.path (with init_from, assembly.build sets it to the source run's); else one trained
    on the training pairs."""
    if config.tokenizer.path:
        return tokenizer_lib.Tokenizer.load(config.tokenizer.path)
    texts = [text for pair in train_pairs for text in pair]
    return tokenizer_lib.load_or_train(config.tokenizer, texts, tokenizer_lib.text_identity("seq2seq", texts),
                                       corpus_lib.cache_root(config.data))


def prepare(config: Config) -> PairCorpus:
    s2s = config.seq2seq
    train_pairs = read_split(config, "train")
    tokenizer = load_tokenizer(config, train_pairs)
    return PairCorpus(tokenizer, tokenize(train_pairs, tokenizer, s2s.input_len, s2s.target_len),
                      tokenize(read_split(config, "validation"), tokenizer, s2s.input_len, s2s.target_len))


def pack_rows(examples: Sequence[tuple[np.ndarray, np.ndarray]], input_len: int, target_len: int,
              pad_id: int) -> dict[str, np.ndarray]:
    """One row holding `examples` [(input ids, target ids)] that must fit (see `plan_rows`)."""
    row = {name: np.zeros(input_len, np.int32) for name in ("encoder_inputs", "encoder_segment_ids",
                                                             "encoder_positions")}
    row.update({name: np.zeros(target_len, np.int32) for name in ("decoder_inputs", "decoder_targets",
                                                                   "decoder_segment_ids", "decoder_positions")})
    row["encoder_inputs"][:] = pad_id
    row["decoder_inputs"][:] = pad_id
    row["decoder_targets"][:] = pad_id
    row["decoder_weights"] = np.zeros(target_len, np.float32)
    at_input = at_target = 0
    for segment, (inputs, targets) in enumerate(examples, 1):
        span_in, span_out = slice(at_input, at_input + len(inputs)), slice(at_target, at_target + len(targets))
        row["encoder_inputs"][span_in] = inputs
        row["encoder_segment_ids"][span_in] = segment
        row["encoder_positions"][span_in] = np.arange(len(inputs))
        row["decoder_targets"][span_out] = targets
        row["decoder_inputs"][span_out] = np.concatenate([[pad_id], targets[:-1]])
        row["decoder_segment_ids"][span_out] = segment
        row["decoder_positions"][span_out] = np.arange(len(targets))
        row["decoder_weights"][span_out] = 1.0
        at_input, at_target = at_input + len(inputs), at_target + len(targets)
    if at_input > input_len or at_target > target_len:
        raise ValueError(f"examples need {at_input} x {at_target} tokens, more than the row's {input_len} x {target_len}")
    return row


def plan_rows(pairs: Pairs, order: Sequence[int], input_len: int, target_len: int) -> list[list[int]]:
    """Greedy packing in `order`: an example joins the current row while both sides fit."""
    rows, current, used_in, used_out = [], [], 0, 0
    for index in order:
        need_in, need_out = len(pairs.inputs[index]), len(pairs.targets[index])
        if current and (used_in + need_in > input_len or used_out + need_out > target_len):
            rows.append(current)
            current, used_in, used_out = [], 0, 0
        current.append(int(index))
        used_in, used_out = used_in + need_in, used_out + need_out
    if current:
        rows.append(current)
    return rows


class PackedRows:
    """Random-access packed rows; indices past the plan are all-padding rows (weight 0)."""

    def __init__(self, pairs: Pairs, plan: list[list[int]], input_len: int, target_len: int, pad_id: int):
        self.pairs, self.plan, self.input_len, self.target_len, self.pad_id = pairs, plan, input_len, target_len, pad_id
        self.length = len(plan)

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        members = self.plan[index] if index < len(self.plan) else []
        return pack_rows([(self.pairs.inputs[i], self.pairs.targets[i]) for i in members], self.input_len,
                         self.target_len, self.pad_id)


def train_rows(pairs: Pairs, input_len: int, target_len: int, pad_id: int, seed: int) -> PackedRows:
    order = np.random.default_rng(seed).permutation(len(pairs.inputs))
    return PackedRows(pairs, plan_rows(pairs, order, input_len, target_len), input_len, target_len, pad_id)


def eval_rows(pairs: Pairs, input_len: int, target_len: int, pad_id: int) -> PackedRows:
    """The validation split packed in order; batching.eval_pass pads it to whole batches."""
    return PackedRows(pairs, plan_rows(pairs, range(len(pairs.inputs)), input_len, target_len), input_len,
                      target_len, pad_id)
