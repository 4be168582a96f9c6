"""Supervised fine-tuning data for decoder models: (prompt, response) pairs through a chat
template, the loss on the response only, packed into rows without cross-contamination.

An example is `EOS + encode(template.render(prompt)) + encode(response) + EOS`: the leading EOS
starts a document as in pretraining, the trailing one teaches the model to stop. The rendered
prompt and the response are tokenized apart, which is how `tools/generate.py --chat` feeds the
prompt at inference, so training and generation see the same token boundary.

Rows have the fields of lm/data/pipeline.py's packed windows (inputs, targets, positions,
segment_ids, weights, target_bytes; int32 [seq_len], weights float32). Examples are packed
whole, greedily in a seeded order; each gets its own segment id (1, 2, ...; 0 is padding) and
positions restarting at 0, so attention never crosses examples (lm/layers.py's attention_mask)
and a row of several examples trains exactly as those examples would alone. Weights are 1 on
targets that are response tokens or the final EOS, 0 on the prompt and on padding.

A prompt longer than finetune.max_prompt_tokens keeps its start (ChatTemplate.show). An example
longer than a row keeps its prompt and loses its response's tail (no final EOS then); one whose
prompt alone fills the row is dropped (there would be nothing to learn); both counts are reported
by `encode`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

from lm import storage
from lm.config import ConfigError
from lm.data import corpus as corpus_lib

PROMPT = "{prompt}"


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """How a prompt is shown to the model; the response follows right after it. With
    `max_prompt_tokens` a longer prompt keeps its first that many tokens (`show`), before the
    template wraps it, so the template's cue to respond is never cut off."""
    prompt_format: str = "### Instruction:\n{prompt}\n\n### Response:\n"
    max_prompt_tokens: int = 0

    def __post_init__(self):
        if self.prompt_format.count(PROMPT) != 1:
            raise ConfigError(f"the chat template {self.prompt_format!r} must hold {PROMPT} exactly once")

    @classmethod
    def from_config(cls, finetune) -> "ChatTemplate":
        return cls(finetune.chat_template, finetune.max_prompt_tokens)

    def render(self, prompt: str) -> str:
        return self.prompt_format.replace(PROMPT, prompt)

    def show(self, prompt: str, tokenizer) -> str:
        """The text the model reads for `prompt`: cut to max_prompt_tokens, then rendered. How
        training, tools/evaluate.py and tools/generate.py --chat all present a prompt."""
        if self.max_prompt_tokens:
            ids = tokenizer.encode(prompt)
            if len(ids) > self.max_prompt_tokens:
                prompt = tokenizer.decode(ids[:self.max_prompt_tokens])
        return self.render(prompt)


def read_jsonl(spec: str, field: str, prompt_field: str, *response_fields: str,
               root: str | None = None) -> list[tuple[str, ...]]:
    """(prompt, response, ...) of every JSON line of `spec`'s files: one response field, or
    several references of a test split (finetune.test_reference_fields)."""
    examples = []
    for path in corpus_lib.expand_files(spec, field, root):
        with storage.open_text(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                missing = [k for k in (prompt_field, *response_fields) if k not in record]
                if missing:
                    raise ConfigError(f"{path}:{number} has no field {missing[0]!r} (it has {', '.join(record)}): set "
                                      f"finetune.text_fields (the prompt) and finetune.label_field (the response; "
                                      f"finetune.test_reference_fields for a test split's references)")
                examples.append((str(record[prompt_field]), *(str(record[k]) for k in response_fields)))
    if not examples:
        raise ConfigError(f"{field}={spec!r} holds no examples")
    return examples


def read_examples(finetune, split: str, root: str | None = None) -> list[tuple[str, ...]]:
    """[(prompt, reference, ...)] of a split ("train", "validation", "test") as read (no template):
    what tools/evaluate.py answers and scores. One reference (finetune.label_field), except a
    test split with finetune.test_reference_fields."""
    spec, field = {"train": (finetune.train_files, "finetune.train_files"),
                   "validation": (finetune.validation_files, "finetune.validation_files"),
                   "test": (finetune.test_files, "finetune.test_files")}[split]
    if not spec:
        raise ConfigError(f"{field} is empty: set it to score the {split} split")
    references = [k.strip() for k in finetune.test_reference_fields.split(",") if k.strip()] if split == "test" else []
    return read_jsonl(spec, field, finetune.text_fields.split(",")[0].strip(), *(references or [finetune.label_field]),
                      root=root)


@dataclasses.dataclass
class SftExamples:
    tokens: list[np.ndarray]  # EOS + prompt + response (+ EOS), at most seq_len + 1 ids
    prompt_lengths: list[int]  # ids before the response, leading EOS included
    texts: list[tuple[str, str]]  # (prompt, response) of the kept examples
    truncated: int = 0
    dropped: int = 0


def encode(pairs: Sequence[tuple[str, str]], tokenizer, template: ChatTemplate, seq_len: int) -> SftExamples:
    result = SftExamples([], [], [])
    for prompt, response in pairs:
        head = [tokenizer.eos_id, *tokenizer.encode(template.show(prompt, tokenizer))]
        if len(head) >= seq_len:
            result.dropped += 1
            continue
        tokens = [*head, *tokenizer.encode(response), tokenizer.eos_id]
        if len(tokens) > seq_len + 1:
            tokens = tokens[:seq_len + 1]
            result.truncated += 1
        result.tokens.append(np.asarray(tokens, np.int32))
        result.prompt_lengths.append(len(head))
        result.texts.append((prompt, response))
    return result


def plan_rows(lengths: Sequence[int], order: Sequence[int], seq_len: int) -> list[list[int]]:
    """Greedy packing in `order`: an example (length - 1 positions) joins the row while it fits."""
    rows, current, used = [], [], 0
    for index in order:
        need = lengths[index] - 1
        if current and used + need > seq_len:
            rows.append(current)
            current, used = [], 0
        current.append(int(index))
        used += need
    if current:
        rows.append(current)
    return rows


def pack_row(examples: SftExamples, members: Sequence[int], seq_len: int, pad_id: int,
             byte_lengths: np.ndarray) -> dict[str, np.ndarray]:
    need = sum(len(examples.tokens[i]) - 1 for i in members)
    if need > seq_len:
        raise ValueError(f"examples need {need} positions, more than the row's {seq_len}")
    row = {name: np.zeros(seq_len, np.int32) for name in ("inputs", "targets", "positions", "segment_ids",
                                                          "target_bytes")}
    row["inputs"][:] = pad_id
    row["targets"][:] = pad_id
    row["weights"] = np.zeros(seq_len, np.float32)
    at = 0
    for segment, index in enumerate(members, 1):
        tokens, prompt_length = examples.tokens[index], examples.prompt_lengths[index]
        span = slice(at, at + len(tokens) - 1)
        row["inputs"][span], row["targets"][span] = tokens[:-1], tokens[1:]
        row["positions"][span] = np.arange(len(tokens) - 1)
        row["segment_ids"][span] = segment
        # Target j predicts token j + 1: a response token (or the final EOS) from j = prompt_length - 1.
        row["weights"][span] = (np.arange(len(tokens) - 1) >= prompt_length - 1).astype(np.float32)
        at += len(tokens) - 1
    row["target_bytes"] = np.where(row["weights"] > 0, byte_lengths[row["targets"]], 0).astype(np.int32)
    return row


class PackedRows:
    """Random-access packed rows; indices past the plan are all-padding rows (weight 0)."""

    def __init__(self, examples: SftExamples, plan: list[list[int]], seq_len: int, pad_id: int,
                 byte_lengths: np.ndarray, pad_to: int = 0):
        self.examples, self.plan, self.seq_len, self.pad_id, self.byte_lengths = (
            examples, plan, seq_len, pad_id, byte_lengths)
        self.length = max(len(plan), pad_to)

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        members = self.plan[index] if index < len(self.plan) else []
        return pack_row(self.examples, members, self.seq_len, self.pad_id, self.byte_lengths)


def train_rows(examples: SftExamples, seq_len: int, pad_id: int, byte_lengths: np.ndarray, seed: int) -> PackedRows:
    order = np.random.default_rng(seed).permutation(len(examples.tokens))
    lengths = [len(t) for t in examples.tokens]
    return PackedRows(examples, plan_rows(lengths, order, seq_len), seq_len, pad_id, byte_lengths)


def eval_rows(examples: SftExamples, seq_len: int, pad_id: int, byte_lengths: np.ndarray, global_batch: int,
              max_batches: int = 0) -> PackedRows:
    plan = plan_rows([len(t) for t in examples.tokens], range(len(examples.tokens)), seq_len)
    num_batches = -(-len(plan) // global_batch)
    if max_batches:
        num_batches = min(num_batches, max_batches)
        plan = plan[:num_batches * global_batch]
    return PackedRows(examples, plan, seq_len, pad_id, byte_lengths, pad_to=num_batches * global_batch)
