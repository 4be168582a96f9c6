"""Sequence tagging evaluation: entity spans from BIO (or IOBES) tags, entity-level precision /
recall / F1 exactly as seqeval defines them (its default, conlleval-compatible mode), and the
dictionary baseline (tag every entity string seen in training).

An entity is (type, first word, last word); a predicted entity counts only if type and both
boundaries equal a true one. Scores are micro-averaged over all entities of all sentences, so
they reduce as counts: `EntityCounts` adds across batches and processes.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

OUTSIDE = "O"


def _split(tag: str) -> tuple[str, str]:
    """'B-creative-work' -> ('B', 'creative-work'); 'O' -> ('O', '_') as seqeval types it."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):  # an I (or E) with nothing open starts one
        return True
    return tag not in ("O", ".") and prev_type != type_


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The (type, start, end) word spans, end inclusive, of one sentence's tags."""
    found, prev_tag, prev_type, begin = set(), "O", "", 0
    for i, label in enumerate([*tags, OUTSIDE]):
        tag, type_ = _split(label)
        if _ends(prev_tag, tag, prev_type, type_):
            found.add((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return found


@dataclasses.dataclass
class EntityCounts:
    correct: int = 0
    predicted: int = 0
    true: int = 0

    def add(self, true_tags: Sequence[str], predicted_tags: Sequence[str]) -> "EntityCounts":
        if len(true_tags) != len(predicted_tags):
            raise ValueError(f"{len(true_tags)} true tags but {len(predicted_tags)} predicted")
        truth, guess = entities(true_tags), entities(predicted_tags)
        self.correct += len(truth & guess)
        self.predicted += len(guess)
        self.true += len(truth)
        return self

    def __add__(self, other: "EntityCounts") -> "EntityCounts":
        return EntityCounts(self.correct + other.correct, self.predicted + other.predicted, self.true + other.true)

    def scores(self) -> dict[str, float]:
        """precision, recall, f1 (0 where undefined, as seqeval's zero_division default gives)."""
        precision = self.correct / self.predicted if self.predicted else 0.0
        recall = self.correct / self.true if self.true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(true_sentences: Iterable[Sequence[str]], predicted_sentences: Iterable[Sequence[str]]) -> dict:
    counts = EntityCounts()
    for true_tags, predicted_tags in zip(true_sentences, predicted_sentences, strict=True):
        counts.add(true_tags, predicted_tags)
    return counts.scores()


class DictionaryTagger:
    """The baseline: every word sequence that was an entity in training is tagged with the type
    it had most often there, wherever it appears (longest match first, left to right)."""

    def __init__(self, sentences: Iterable[tuple[Sequence[str], Sequence[str]]], lowercase: bool = False):
        self.lowercase = lowercase
        votes: dict[tuple[str, ...], dict[str, int]] = {}
        for words, tags in sentences:
            for type_, start, end in entities(tags):
                key = self._key(words[start:end + 1])
                votes.setdefault(key, {}).setdefault(type_, 0)
                votes[key][type_] += 1
        # Ties go to the alphabetically first type, so the baseline does not depend on file order.
        self.types = {key: min(counts, key=lambda t: (-counts[t], t)) for key, counts in votes.items()}
        self.longest = max((len(k) for k in self.types), default=0)

    def _key(self, words: Sequence[str]) -> tuple[str, ...]:
        return tuple(w.lower() for w in words) if self.lowercase else tuple(words)

    def tag(self, words: Sequence[str]) -> list[str]:
        tags, i = [OUTSIDE] * len(words), 0
        while i < len(words):
            for length in range(min(self.longest, len(words) - i), 0, -1):
                type_ = self.types.get(self._key(words[i:i + length]))
                if type_ is not None:
                    tags[i:i + length] = [f"B-{type_}"] + [f"I-{type_}"] * (length - 1)
                    i += length
                    break
            else:
                i += 1
        return tags


# --- the same counts on device, inside the jitted eval step --------------------------------------

PREFIX_CODES = {"O": 0, "B": 1, "I": 2}


def tag_codes(label_names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Per label id: its prefix code (O 0, B 1, I 2) and an entity type number (O: -1)."""
    types = sorted({name[2:] for name in label_names if name != OUTSIDE})
    prefixes = [PREFIX_CODES[name[0]] for name in label_names]
    type_ids = [-1 if name == OUTSIDE else types.index(name[2:]) for name in label_names]
    return prefixes, type_ids


def entity_sums(predicted_BL, true_BL, valid_BL, prefix_C, type_C):
    """(correct, predicted, true) entity counts of a batch of BIO tag-id rows, as `entities`
    defines them on the valid positions only (a row's words: other positions are a word's later
    pieces or padding and are skipped, as if absent). jnp arrays; prefix_C and type_C from
    `tag_codes`."""
    import jax  # noqa: PLC0415 (the host-side half of this module needs no jax)
    import jax.numpy as jnp  # noqa: PLC0415

    length = valid_BL.shape[1]
    index_BL = jnp.broadcast_to(jnp.arange(length), valid_BL.shape)

    def starts_and_ends(tags_BL):
        prefix = jnp.where(valid_BL, jnp.take(prefix_C, tags_BL), 0)
        type_ = jnp.where(valid_BL, jnp.take(type_C, tags_BL), -1)
        # The previous valid position's tag (O before the first): forward fill of valid indices.
        last_valid = jax.lax.cummax(jnp.where(valid_BL, index_BL, -1), axis=1)
        previous = jnp.concatenate([jnp.full_like(last_valid[:, :1], -1), last_valid[:, :-1]], axis=1)
        prev_prefix = jnp.where(previous >= 0, jnp.take_along_axis(prefix, jnp.maximum(previous, 0), axis=1), 0)
        prev_type = jnp.where(previous >= 0, jnp.take_along_axis(type_, jnp.maximum(previous, 0), axis=1), -1)
        # The next valid position's tag (O after the last): backward fill.
        next_valid = jnp.flip(jax.lax.cummin(jnp.flip(jnp.where(valid_BL, index_BL, length), axis=1), axis=1), axis=1)
        following = jnp.concatenate([next_valid[:, 1:], jnp.full_like(next_valid[:, :1], length)], axis=1)
        next_prefix = jnp.where(following < length, jnp.take_along_axis(prefix, jnp.minimum(following, length - 1),
                                                                         axis=1), 0)
        next_type = jnp.where(following < length, jnp.take_along_axis(type_, jnp.minimum(following, length - 1),
                                                                       axis=1), -1)
        inside = valid_BL & (prefix > 0)
        starts = inside & ((prefix == 1) | (prev_prefix == 0) | (prev_type != type_))
        ends = inside & ~((next_prefix == 2) & (next_type == type_))
        # Each start's end: the first end at or after it.
        end_at = jnp.flip(jax.lax.cummin(jnp.flip(jnp.where(ends, index_BL, length), axis=1), axis=1), axis=1)
        return starts, type_, end_at

    starts_p, type_p, end_p = starts_and_ends(predicted_BL)
    starts_t, type_t, end_t = starts_and_ends(true_BL)
    correct = starts_p & starts_t & (type_p == type_t) & (end_p == end_t)
    return jnp.sum(correct), jnp.sum(starts_p), jnp.sum(starts_t)
