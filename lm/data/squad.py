"""Extractive question answering data: SQuAD-format examples -> fixed-length windows with
start/end token positions and the character span of every context token.

Offsets. Answers are character spans of the context, the model sees tokens, so every context
token carries its [start, end) character span (`tokenizer.encode_with_offsets`). sentencepiece
reports UTF-8 byte offsets, which lm/data/tokenizer.py maps to characters; a piece's span includes
the space it absorbs ("▁word"), and byte-fallback pieces of one character share it (all but the
last empty). Hugging Face tokenizers give character offsets directly. So an answer's first token
is the first context token whose span ends after the answer's start, its last token the last one
that starts before the answer's end, and a predicted (start, end) token pair maps back to
`context[span(start)[0]:span(end)[1]].strip()`.

Long contexts. A window is `prefix + question + middle + context chunk + suffix` (the layout's
special ids: BERT `[CLS] q [SEP] c [SEP]`; a decoder `EOS q \\n c`). Context chunks are as long
as `max_len` allows and start every `doc_stride` tokens (BERT's run_squad convention: the step
between chunk starts, so chunks overlap by length - stride), the last one reaching the end. A
window that does not hold the whole answer labels position 0 (the prefix token) as both start and
end: "no answer here", which prediction never returns as a span.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

from lm import storage
from lm.config import ConfigError


@dataclasses.dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]  # every reference answer (evaluation takes the best match)
    answer_starts: tuple[int, ...]  # character offset of each answer in the context


@dataclasses.dataclass(frozen=True)
class Layout:
    """Special ids around the question and the context chunk; `prefix` must not be empty (its
    first position is the "no answer in this window" label)."""
    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...] = ()


@dataclasses.dataclass
class QAWindow:
    example_index: int
    input_ids: np.ndarray  # [length] int32, unpadded
    segment_ids: np.ndarray  # [length] 0 on prefix + question + middle, 1 on the context chunk + suffix
    context_spans: np.ndarray  # [length, 2] character span of each context token; -1 elsewhere
    start_position: int  # token index of the answer's first token; 0: not in this window
    end_position: int


def read_squad_json(path: str) -> list[QAExample]:
    """SQuAD v1.1 JSON: {"data": [{"paragraphs": [{"context", "qas": [{"id", "question",
    "answers": [{"text", "answer_start"}]}]}]}]}."""
    with storage.open_text(path) as f:
        try:
            data = json.load(f)["data"]
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path} is not SQuAD-format JSON ({error!r}): expected {{\"data\": [{{\"paragraphs\": "
                              f"[{{\"context\", \"qas\": [...]}}]}}]}}") from None
    examples = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                examples.append(QAExample(str(qa["id"]), qa["question"], paragraph["context"],
                                          tuple(a["text"] for a in qa["answers"]),
                                          tuple(int(a["answer_start"]) for a in qa["answers"])))
    return examples


def from_tfds(example: dict) -> QAExample:
    """One record of tfds `squad` (as_data_source: str fields, answers as arrays)."""
    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    answers = example["answers"]
    texts = [text(t) for t in answers["text"]]
    starts = [int(s) for s in answers["answer_start"]][:len(texts)]
    return QAExample(text(example["id"]), text(example["question"]), text(example["context"]),
                     tuple(texts[:len(starts)]), tuple(starts))


def answer_in_context(example: QAExample, index: int = 0) -> bool:
    """Whether answer `index` is where its start says (training needs a true span)."""
    if index >= len(example.answers):
        return False
    start, answer = example.answer_starts[index], example.answers[index]
    return bool(answer.strip()) and example.context[start:start + len(answer)] == answer


def _token_span(spans: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last token (indices into `spans`) covering characters [char_start, char_end)."""
    covering = [i for i, (s, e) in enumerate(spans) if s < e and e > char_start and s < char_end]
    return (covering[0], covering[-1]) if covering else None


def windows(example: QAExample, example_index: int, tokenizer, layout: Layout, max_len: int, doc_stride: int,
            max_question_tokens: int = 64) -> list[QAWindow]:
    """The example's windows, labelled with the first answer (when it is where it says it is)."""
    if not layout.prefix:
        raise ConfigError("the QA layout needs a prefix token: position 0 labels 'no answer in this window'")
    question = tokenizer.encode(example.question)[:max_question_tokens]
    context_ids, context_spans = tokenizer.encode_with_offsets(example.context)
    head = [*layout.prefix, *question, *layout.middle]
    budget = max_len - len(head) - len(layout.suffix)
    if budget <= 0 or doc_stride <= 0:
        raise ConfigError(f"max_len={max_len} leaves no room for context after a {len(head)}-token question "
                          f"(or doc_stride={doc_stride} is not positive): raise the length or lower max_question_tokens")
    answer = None
    if answer_in_context(example):
        start = example.answer_starts[0]
        answer = _token_span(context_spans, start, start + len(example.answers[0]))
    starts = list(range(0, max(len(context_ids) - budget, 0) + 1, doc_stride))
    if starts[-1] + budget < len(context_ids):
        starts.append(len(context_ids) - budget)
    result = []
    for chunk_start in starts:
        chunk = slice(chunk_start, chunk_start + budget)
        chunk_ids = context_ids[chunk]
        ids = np.asarray([*head, *chunk_ids, *layout.suffix], np.int32)
        spans = np.full((len(ids), 2), -1, np.int32)
        spans[len(head):len(head) + len(chunk_ids)] = context_spans[chunk]
        segment_ids = np.zeros(len(ids), np.int32)
        segment_ids[len(head):] = 1
        start_position = end_position = 0
        if answer is not None and chunk_start <= answer[0] and answer[1] < chunk_start + len(chunk_ids):
            start_position, end_position = (len(head) + a - chunk_start for a in answer)
        result.append(QAWindow(example_index, ids, segment_ids, spans, start_position, end_position))
    return result
