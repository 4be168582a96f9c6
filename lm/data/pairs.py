"""Sentence-pair examples for BERT pretraining: documents -> sentences -> [CLS] A [SEP] B [SEP],
with next-sentence labels and masked-LM targets.

Example k is a pure function of (seed, k): grain draws the anchor sentence (shuffled per
epoch) and hands `random_map` a generator seeded by the example's index, so a run is
deterministic per seed, every epoch masks differently, and the iterator's state is one index
(saved in every checkpoint, like the causal-LM pipeline's).

Pair construction (as in BERT's recipe): from the anchor sentence on, whole sentences of one
document are gathered until the pair's token budget is reached; a random sentence boundary
splits them into A and B. Half the time B is that true continuation (label 1); otherwise B is
a run of sentences from a random start in a *different* document (label 0). An overlong pair
loses tokens at A's start and B's end, so the junction the classifier judges stays intact.
Masking: `mask_rate` of the non-special tokens are chosen (at most `max_predictions`); each
becomes [MASK] with probability `mask_token_fraction`, a random ordinary piece with
`random_token_fraction`, and stays unchanged otherwise.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from lm.config import ConfigError, MlmConfig
from lm.data import text as text_lib
from lm.data import tokenizer as tokenizer_lib

SPECIAL_PIECES = ("[CLS]", "[SEP]", "[MASK]")  # [PAD] is the sentencepiece model's own pad piece
_ARTICLE_TITLE = re.compile(r"^\s*= [^=].* =\s*$")  # WikiText: " = Title = " opens an article
_HEADING = re.compile(r"^\s*(= )+.*( =)+\s*$")  # any WikiText heading line (section titles too)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def split_documents(text: str, boundary: str) -> list[list[str]]:
    """Documents as lists of sentences. `heading`: WikiText article titles start documents
    (heading lines themselves are dropped); `paragraph`: blank-line separated blocks."""
    text = text_lib.clean(text)
    if boundary == "heading":
        blocks, current = [], []
        for line in text.split("\n"):
            if _ARTICLE_TITLE.match(line) and current:
                blocks.append(current)
                current = []
            if not _HEADING.match(line):
                current.append(line)
        blocks.append(current)
    else:
        blocks = [p.split("\n") for p in text_lib.split_paragraphs(text)]
    documents = []
    for lines in blocks:
        sentences = [s.strip() for line in lines for s in _SENTENCE_END.split(line) if s.strip()]
        if sentences:
            documents.append(sentences)
    return documents


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    mask: int
    pad: int
    ordinary: np.ndarray  # ids a "random token" replacement draws from (no control or special pieces)

    @classmethod
    def from_tokenizer(cls, tokenizer: tokenizer_lib.Tokenizer) -> "SpecialIds":
        try:
            cls_id, sep_id, mask_id = (tokenizer.piece_id(p) for p in SPECIAL_PIECES)
        except ConfigError:
            raise ConfigError(f"the tokenizer lacks BERT's special pieces {', '.join(SPECIAL_PIECES)}: set "
                              f"tokenizer.special_symbols='{','.join(SPECIAL_PIECES)}' (configs/bert_tiny.py does) "
                              f"and let it train, or give a tokenizer.path that has them") from None
        excluded = {cls_id, sep_id, mask_id, tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id, 1}
        ordinary = np.asarray([i for i in range(tokenizer.vocab_size) if i not in excluded
                               and tokenizer.byte_lengths[i] > 0], np.int32)
        return cls(cls_id, sep_id, mask_id, tokenizer.pad_id, ordinary)


def encode_sentences(tokenizer: tokenizer_lib.Tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence, encoded with a leading space. Our tokenizers add no dummy
    prefix, so without it a sentence's first word would get different pieces ("The" instead of
    "\u2581The") than the same word in running text, and sentences joined into a pair would decode
    with no space between them ("end.Next"). Pretraining pairs and fine-tuning inputs both
    encode through here, so a word has one spelling in pieces everywhere."""
    return tokenizer.encode_batch([" " + s.lstrip() for s in sentences])


@dataclasses.dataclass(frozen=True)
class Documents:
    """Tokenized documents: sentence k of document d is tokens[starts[d][k]:ends[d][k]]."""
    sentences: list[list[np.ndarray]]

    @classmethod
    def tokenize(cls, documents: list[list[str]], tokenizer: tokenizer_lib.Tokenizer) -> "Documents":
        flat = encode_sentences(tokenizer, [s for doc in documents for s in doc])
        out, i = [], 0
        for doc in documents:
            out.append([np.asarray(ids, np.int32) for ids in flat[i:i + len(doc)] if ids])
            i += len(doc)
        return cls([d for d in out if d])

    def anchors(self) -> np.ndarray:
        """(document, sentence) of every sentence that has a successor in its document."""
        return np.asarray([(d, s) for d, doc in enumerate(self.sentences) for s in range(len(doc) - 1)], np.int32)


def _take_sentences(doc: list[np.ndarray], start: int, budget: int, at_least: int) -> list[np.ndarray]:
    chunk, length, i = [], 0, start
    while i < len(doc) and (length < budget or len(chunk) < at_least):
        chunk.append(doc[i])
        length += len(doc[i])
        i += 1
    return chunk


def make_pair(docs: Documents, anchor, seq_len: int, short_pair_rate: float, rng: np.random.Generator):
    """(A tokens, B tokens, is_next) for the anchor sentence; A + B fit seq_len - 3."""
    max_tokens = seq_len - 3
    budget = max_tokens if rng.random() >= short_pair_rate else int(rng.integers(2, max_tokens + 1))
    doc_index, sentence = int(anchor[0]), int(anchor[1])
    chunk = _take_sentences(docs.sentences[doc_index], sentence, budget, at_least=2)
    split = int(rng.integers(1, len(chunk)))
    a = np.concatenate(chunk[:split])
    is_next = bool(rng.random() < 0.5)
    if is_next:
        b = np.concatenate(chunk[split:])
    else:
        other = int(rng.integers(0, len(docs.sentences) - 1))
        other += other >= doc_index  # uniform over the *other* documents
        other_doc = docs.sentences[other]
        start = int(rng.integers(0, len(other_doc)))
        b = np.concatenate(_take_sentences(other_doc, start, max(budget - len(a), 1), at_least=1))
    if len(a) + len(b) > max_tokens:  # trim the longer side, away from the A|B junction
        keep_a = min(len(a), max(max_tokens - len(b), max_tokens // 2))
        a, b = a[len(a) - keep_a:], b[:max_tokens - keep_a]
    return a, b, is_next


def encode_pair(a: np.ndarray, b: np.ndarray | None, seq_len: int, ids: SpecialIds):
    """[CLS] a [SEP] (b [SEP]) padded to seq_len: (tokens, type_ids, segment_ids) int32."""
    parts = [[ids.cls], a, [ids.sep]] + ([b, [ids.sep]] if b is not None else [])
    tokens = np.concatenate([np.asarray(p, np.int32) for p in parts])[:seq_len]
    type_ids = np.zeros(seq_len, np.int32)
    if b is not None:
        type_ids[len(a) + 2:len(tokens)] = 1
    padded = np.full(seq_len, ids.pad, np.int32)
    padded[:len(tokens)] = tokens
    segment_ids = (np.arange(seq_len) < len(tokens)).astype(np.int32)
    return padded, type_ids, segment_ids


def mask_tokens(tokens: np.ndarray, segment_ids: np.ndarray, ids: SpecialIds, config: MlmConfig,
                rng: np.random.Generator):
    """(masked inputs, positions [P], targets [P], weights [P]); P = config.max_predictions."""
    special = (tokens == ids.cls) | (tokens == ids.sep) | (segment_ids == 0)
    candidates = np.flatnonzero(~special)
    count = min(config.max_predictions, max(1, int(round(len(candidates) * config.mask_rate))), len(candidates))
    chosen = np.sort(rng.choice(candidates, count, replace=False))
    inputs = tokens.copy()
    draw = rng.random(count)
    to_mask = draw < config.mask_token_fraction
    to_random = ~to_mask & (draw < config.mask_token_fraction + config.random_token_fraction)
    inputs[chosen[to_mask]] = ids.mask
    inputs[chosen[to_random]] = rng.choice(ids.ordinary, int(to_random.sum()))
    positions = np.zeros(config.max_predictions, np.int32)
    targets = np.zeros(config.max_predictions, np.int32)
    weights = np.zeros(config.max_predictions, np.float32)
    positions[:count], targets[:count], weights[:count] = chosen, tokens[chosen], 1.0
    return inputs, positions, targets, weights


class PretrainingExamples:
    """`random_map` transform: anchor -> a masked sentence-pair example (dict of arrays)."""

    def __init__(self, docs: Documents, seq_len: int, ids: SpecialIds, config: MlmConfig):
        if len(docs.sentences) < 2:
            raise ConfigError("next-sentence prediction needs at least two documents; this corpus has "
                              f"{len(docs.sentences)}: give more text or check mlm.document_boundary")
        self.docs, self.seq_len, self.ids, self.config = docs, seq_len, ids, config

    def __call__(self, anchor, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if anchor[0] < 0:  # evaluation padding: an all-padding example that counts nowhere
            return self.padding()
        a, b, is_next = make_pair(self.docs, anchor, self.seq_len, self.config.short_pair_rate, rng)
        tokens, type_ids, segment_ids = encode_pair(a, b, self.seq_len, self.ids)
        inputs, positions, targets, weights = mask_tokens(tokens, segment_ids, self.ids, self.config, rng)
        return {"inputs": inputs, "type_ids": type_ids, "segment_ids": segment_ids, "mlm_positions": positions,
                "mlm_targets": targets, "mlm_weights": weights, "nsp_labels": np.int32(is_next),
                "nsp_weights": np.float32(1.0)}

    def padding(self) -> dict[str, np.ndarray]:
        zeros = lambda dtype, *shape: np.zeros(shape, dtype)  # noqa: E731
        p = self.config.max_predictions
        return {"inputs": np.full(self.seq_len, self.ids.pad, np.int32), "type_ids": zeros(np.int32, self.seq_len),
                "segment_ids": zeros(np.int32, self.seq_len), "mlm_positions": zeros(np.int32, p),
                "mlm_targets": zeros(np.int32, p), "mlm_weights": zeros(np.float32, p),
                "nsp_labels": np.int32(0), "nsp_weights": np.float32(0.0)}


class StreamedPairs:
    """Streaming BERT rows (lm/data/packing.py, RowSpec size 0): row t of a slot comes from the
    slot's record t, split into documents by `boundary`: a random anchor sentence that has a
    successor, the sentences from it on as A and B, or B from another document of the record (of
    the next record when the record holds one), masked as PretrainingExamples masks. Only the
    sentences a pair can use are tokenized. Records with no anchor hand over to the next one."""

    _CHARS_PER_TOKEN = 8  # tokenize at most this many characters per row token: more than a pair needs

    def __init__(self, seq_len: int, ids: SpecialIds, config: MlmConfig, boundary: str, lowercase: bool):
        self.seq_len, self.ids, self.config, self.boundary, self.lowercase = seq_len, ids, config, boundary, lowercase

    def _documents(self, text: str) -> list[list[str]]:
        return split_documents(text.lower() if self.lowercase else text, self.boundary)

    def _tokenized(self, tokenizer, sentences: list[str]) -> list[np.ndarray]:
        budget, taken = self.seq_len * self._CHARS_PER_TOKEN, []
        for sentence in sentences:
            if budget <= 0 and len(taken) >= 2:
                break
            taken.append(sentence)
            budget -= len(sentence)
        return [np.asarray(ids, np.int32) for ids in encode_sentences(tokenizer, taken) if ids]

    def __call__(self, text_at, position: int, rng: np.random.Generator, tokenizer) -> dict[str, np.ndarray]:
        for offset in range(16):
            documents = self._documents(text_at(position + offset))
            anchors = [(d, s) for d, doc in enumerate(documents) for s in range(len(doc) - 1)]
            if anchors:
                break
        else:
            raise ConfigError("16 records in a row have no sentence with a successor: check mlm.document_boundary")
        d, s = anchors[int(rng.integers(len(anchors)))]
        others = [doc for i, doc in enumerate(documents) if i != d] or self._documents(text_at(position + offset + 1))
        other = others[int(rng.integers(len(others)))]
        start = int(rng.integers(len(other)))
        docs = Documents([self._tokenized(tokenizer, documents[d][s:]), self._tokenized(tokenizer, other[start:])])
        return PretrainingExamples(docs, self.seq_len, self.ids, self.config)(np.asarray([0, 0]), rng)
