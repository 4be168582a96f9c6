"""Extractive QA answers and their scores: the best context span from start/end logits over an
example's windows, and SQuAD's exact match and F1 (its official answer normalisation: lower
case, punctuation and the articles a/an/the removed, whitespace collapsed; the best over the
reference answers; averaged over examples, in percent)."""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Sequence

import numpy as np

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return float(max(normalize_answer(prediction) == normalize_answer(r) for r in references))


def f1(prediction: str, references: Sequence[str]) -> float:
    def one(reference: str) -> float:
        predicted, true = normalize_answer(prediction).split(), normalize_answer(reference).split()
        common = sum((collections.Counter(predicted) & collections.Counter(true)).values())
        if not predicted or not true:
            return float(predicted == true)
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(true)
        return 2 * precision * recall / (precision + recall)
    return max(one(r) for r in references)


def scores(predictions: Iterable[str], references: Iterable[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over the examples that have a reference answer."""
    matches, overlaps = [], []
    for prediction, refs in zip(predictions, references, strict=True):
        if refs:
            matches.append(exact_match(prediction, refs))
            overlaps.append(f1(prediction, refs))
    if not matches:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": 100 * float(np.mean(matches)), "f1": 100 * float(np.mean(overlaps))}


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, context_spans: np.ndarray,
              max_answer_tokens: int = 30) -> tuple[float, int, int] | None:
    """(score, start, end) of the highest start + end logit over context tokens with
    start <= end < start + max_answer_tokens; None if the window has no context token.
    Tokens with an empty span (leading byte-fallback pieces) are never a boundary."""
    valid = context_spans[:, 1] > context_spans[:, 0]
    if not valid.any():
        return None
    start_scores = np.where(valid, start_logits, -np.inf)
    end_scores = np.where(valid, end_logits, -np.inf)
    total = start_scores[:, None] + end_scores[None, :]
    length = np.arange(len(valid))[None, :] - np.arange(len(valid))[:, None]
    total = np.where((length >= 0) & (length < max_answer_tokens), total, -np.inf)
    start, end = np.unravel_index(np.argmax(total), total.shape)
    if not np.isfinite(total[start, end]):
        return None
    return float(total[start, end]), int(start), int(end)


def answer_text(context: str, context_spans: np.ndarray, start: int, end: int) -> str:
    return context[context_spans[start, 0]:context_spans[end, 1]].strip()


def predict(context: str, windows: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
            max_answer_tokens: int = 30) -> str:
    """The best answer over one example's windows, each (start_logits, end_logits, context_spans)."""
    best = None
    for start_logits, end_logits, spans in windows:
        found = best_span(start_logits, end_logits, spans, max_answer_tokens)
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], answer_text(context, spans, found[1], found[2]))
    return "" if best is None else best[1]
