"""Token classification data: CoNLL files, BIO label sets, and subword <-> word alignment.

CoNLL: one word a line, its tag in the last (tab- or space-separated) column, sentences separated
by blank or whitespace-only lines (WNUT-17's training file uses a lone tab). Where a tag lists
alternatives separated by commas (WNUT-17's emerging.test.conll gives several annotations for
some words) the first is taken.

Alignment: each word is tokenized on its own, preceded by a space unless it starts the sentence,
so its pieces are the ones running text would give. The first piece of a word (the first holding
its characters: a lone space piece in front belongs to no word) carries the word's label; the
others carry IGNORE (no loss, no prediction). A word's prediction is its first piece's;
a word with no piece (cut off by the length limit) is predicted "O", so the metrics count its
entity as missed rather than skip it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lm import storage
from lm.config import ConfigError

IGNORE = -1  # label of non-first pieces and special tokens
OUTSIDE = "O"


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]


def read_conll(path: str) -> list[TaggedSentence]:
    sentences, words, tags = [], [], []
    with storage.open_text(path) as f:
        for line_number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                if words:
                    sentences.append(TaggedSentence(tuple(words), tuple(tags)))
                    words, tags = [], []
                continue
            if len(fields) < 2:
                raise ConfigError(f"{path}:{line_number}: expected a word and a tag, got {line.rstrip()!r}")
            words.append(fields[0])
            tags.append(fields[-1].split(",")[0])
    if words:
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))
    if not sentences:
        raise ConfigError(f"{path} holds no sentences: expected CoNLL lines 'word<TAB>tag', blank line between sentences")
    return sentences


def label_names(sentences: Sequence[TaggedSentence]) -> list[str]:
    """"O", then B- and I- of every entity type seen (both, so either can be predicted), sorted."""
    types = set()
    for sentence in sentences:
        for tag in sentence.tags:
            if tag != OUTSIDE:
                if tag[:2] not in ("B-", "I-"):
                    raise ConfigError(f"tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)")
                types.add(tag[2:])
    return [OUTSIDE] + [f"{prefix}-{t}" for t in sorted(types) for prefix in ("B", "I")]


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """Each word's pieces, the word preceded by a space unless it starts the sentence."""
    return [tokenizer.encode(word if index == 0 else " " + word) for index, word in enumerate(words)]


def flatten(tokenizer, pieces: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Token ids and, per token, the index of its word; -1 for a word's leading piece that is
    only the space before it (a tokenizer whose vocabulary lacks "▁word" splits it off), which
    belongs to the gap between words and so carries no label: the word's first piece is the
    first that holds its characters."""
    ids, word_of_token = [], []
    for index, word in enumerate(pieces):
        for position, piece in enumerate(word):
            gap = position == 0 and len(word) > 1 and not tokenizer.decode([piece]).strip()
            ids.append(piece)
            word_of_token.append(-1 if gap else index)
    return ids, word_of_token


def encode_words(tokenizer, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of the sentence and, per token, the index of the word it belongs to (-1: a gap)."""
    return flatten(tokenizer, word_pieces(tokenizer, words))


def first_piece_labels(word_of_token: Sequence[int], word_labels: Sequence[int]) -> np.ndarray:
    """Per token: its word's label on the word's first piece, IGNORE on the others."""
    labels = np.full(len(word_of_token), IGNORE, np.int32)
    previous = -1
    for position, word in enumerate(word_of_token):
        if word >= 0 and word != previous:
            labels[position] = word_labels[word]
        previous = word
    return labels


def word_predictions(token_predictions: Sequence[int], word_of_token: Sequence[int], num_words: int,
                     outside_id: int = 0) -> list[int]:
    """Per word: the prediction at its first piece; `outside_id` for words with no piece."""
    predictions = [outside_id] * num_words
    seen = set()
    for prediction, word in zip(token_predictions, word_of_token):
        if word >= 0 and word not in seen:
            predictions[word] = int(prediction)
            seen.add(word)
    return predictions
