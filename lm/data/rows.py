"""One example a row, in the family's layout: what the fine-tuning heads read.

  bert: [CLS] a [SEP] (b [SEP])    type ids 0 on a's part, 1 on b's
  gpt:  EOS a (EOS b)              EOS starts a document, as in pretraining; the pair's second
                                   EOS marks where b starts (a decoder has no type embeddings)
  t5:   a EOS (b EOS)              an encoder input ends with EOS, as in T5's pretraining and
                                   seq2seq rows (lm/data/seq2seq.py)

segment_ids are 1 on real tokens and 0 on padding (attention never reads padding; a sequence
classifier pools the real tokens). Rows are padded on the right with the tokenizer's pad id.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lm.data import pairs


@dataclasses.dataclass(frozen=True)
class RowLayout:
    prefix: tuple[int, ...]
    separator: tuple[int, ...]  # between a and b (a QA window: between question and context)
    suffix: tuple[int, ...]  # after the last text
    pad: int

    @classmethod
    def for_family(cls, family: str, tokenizer) -> "RowLayout":
        if family == "bert":
            ids = pairs.SpecialIds.from_tokenizer(tokenizer)
            return cls((ids.cls,), (ids.sep,), (ids.sep,), tokenizer.pad_id)
        if family == "t5":
            return cls((), (tokenizer.eos_id,), (tokenizer.eos_id,), tokenizer.pad_id)
        return cls((tokenizer.eos_id,), (tokenizer.eos_id,), (), tokenizer.pad_id)

    def overhead(self, pair: bool) -> int:
        return len(self.prefix) + len(self.suffix) + (len(self.separator) if pair else 0)


def encode(a, b, layout: RowLayout, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, type_ids, segment_ids) int32 [seq_len]; a and b must already fit."""
    first = [*layout.prefix, *a]
    tokens = first + ([*layout.separator, *b] if b is not None else []) + list(layout.suffix)
    if len(tokens) > seq_len:
        raise ValueError(f"{len(tokens)} tokens do not fit a row of {seq_len}")
    inputs = np.full(seq_len, layout.pad, np.int32)
    inputs[:len(tokens)] = tokens
    type_ids = np.zeros(seq_len, np.int32)
    if b is not None:
        type_ids[len(first) + len(layout.separator):len(tokens)] = 1
    segment_ids = (np.arange(seq_len) < len(tokens)).astype(np.int32)
    return inputs, type_ids, segment_ids
