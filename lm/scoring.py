"""Scoring text with a trained causal language model: loss, perplexity and bits per byte of any
text, and zero-shot multiple choice by log-likelihood.

Text is scored exactly as training evaluates its validation split: the files' cleaned documents
form one stream `[EOS] doc0 [EOS] doc1 ... [EOS]` (lm/data/pipeline.py), cut into windows of the
run's `data.seq_len`, and the run's own objective sums the NLL, the target tokens and their UTF-8
bytes (EOS carries 0 bytes). So on the run's validation files the figures are the run's
`eval/loss`, `eval/perplexity` and `eval/bits_per_byte`.

Multiple choice follows the common zero-shot harnesses (lm-evaluation-harness, GPT-3's paper):
each choice is a continuation of the context; its score is the summed log-likelihood of its
tokens given `[EOS] context`. The continuation's tokens are those of `context + choice` after
the context's own tokens, so the text is tokenized as the model saw text in training.
`accuracy` picks the highest summed log-likelihood; `accuracy_norm` divides it by the choice's
length in characters first (lm-evaluation-harness's `acc_norm`), which removes the bias toward
short choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lm import assembly, losses, sharding, tasks
from lm import workdir as workdir_lib
from lm.config import ConfigError, MeshConfig
from lm.data import corpus as corpus_lib
from lm.data import pipeline


@dataclasses.dataclass
class Scorer:
    """A trained causal LM ready to score: the restored run (lm/pretrained.py), its objective and mesh."""
    run: object  # lm.pretrained.Pretrained
    objective: object
    mesh: jax.sharding.Mesh
    batch_size: int

    @classmethod
    def load(cls, path: str, which: str | int = "best", batch_size: int = 16) -> "Scorer":
        """Checkpoint `which` (best, latest or a step number) of the run at `path`."""
        from lm import pretrained  # noqa: PLC0415 (restoring pulls in the optimizer and checkpoints)

        config = workdir_lib.read_config(workdir_lib.resolve(path, which)[0])
        if config.train.objective != "causal_lm":
            raise ConfigError(f"{path} was trained for {config.train.objective!r}; scoring text needs a causal "
                              f"language model (train.objective=causal_lm, e.g. configs/gpt_tiny.py)")
        mesh = sharding.make_mesh(MeshConfig())
        run = pretrained.load(path, which, mesh)
        devices = mesh.size
        return cls(run, tasks.objective(run.config), mesh, max(devices, batch_size // devices * devices))

    @property
    def seq_len(self) -> int:
        return self.run.config.data.seq_len


def _batches_of(rows: list[dict], batch_size: int):
    """Rows -> batches of exactly `batch_size` rows, the last padded with all-zero rows (weight 0)."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        chunk = chunk + [jax.tree.map(np.zeros_like, rows[0])] * (batch_size - len(chunk))
        yield {key: np.stack([row[key] for row in chunk]) for key in chunk[0]}


def score_text(scorer: Scorer, files: Sequence[str], document_unit: str = "file", progress: bool = True) -> dict:
    """{"loss" (nats/token), "perplexity", "bits_per_byte", "token_accuracy", "tokens", "bytes",
    "documents"} of the text in `files` (one document a file, or a paragraph)."""
    documents = corpus_lib.read_documents(files, document_unit)
    if not documents:
        raise ConfigError(f"{', '.join(files)}: no text after cleaning: give files with text in them")
    tokenizer = scorer.run.tokenizer
    tokens, _ = pipeline.token_stream(documents, tokenizer)
    batches = pipeline.stream_batches(tokens, tokenizer, scorer.seq_len, scorer.batch_size,
                                      process_index=jax.process_index(), process_count=jax.process_count())
    num_batches = math.ceil(math.ceil((len(tokens) - 1) / scorer.seq_len) / scorer.batch_size)
    eval_step = assembly.build_steps(scorer.run.config, scorer.run.config.model, scorer.mesh, scorer.objective).eval_step
    totals = None
    with sharding.activation_rules(scorer.mesh):
        for batch in tqdm.tqdm(batches, total=num_batches, desc="scoring", unit="batch", disable=not progress):
            sums = eval_step(scorer.run.params, sharding.to_global(batch, scorer.mesh))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.tree.map(float, jax.device_get(totals))
    metrics = {name.split("/", 1)[1]: value for name, value in scorer.objective.eval_metrics(totals).items()}
    metrics["token_accuracy"] = metrics.pop("accuracy")  # next-token; "accuracy" is multiple choice's
    return {**metrics, "tokens": int(totals["weight"]), "bytes": int(totals["bytes"]), "documents": len(documents)}


@dataclasses.dataclass(frozen=True)
class Question:
    context: str
    choices: tuple[str, ...]
    label: int


def read_questions(path: str) -> list[Question]:
    """JSON lines {"context": str, "choices": [str, ...], "label": index of the right choice}."""
    questions = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [key for key in ("context", "choices", "label") if key not in record]
            if missing:
                raise ConfigError(f"{path}:{number} has no {', '.join(missing)}: each line needs "
                                  f'{{"context": str, "choices": [str, ...], "label": int}}')
            choices, label = tuple(record["choices"]), record["label"]
            if len(choices) < 2 or not isinstance(label, int) or not 0 <= label < len(choices):
                raise ConfigError(f"{path}:{number}: needs two or more choices and a label indexing them "
                                  f"(got {len(choices)} choices, label {label!r})")
            questions.append(Question(record["context"], choices, label))
    if not questions:
        raise ConfigError(f"{path} holds no questions")
    return questions


def continuation_row(tokenizer, context: str, continuation: str, seq_len: int) -> dict:
    """One row scoring `continuation` after `[EOS] context`: inputs, targets, positions,
    segment_ids and weights (1 on the continuation's tokens), all [seq_len]. A context too long
    for the window loses its beginning."""
    context_ids = tokenizer.encode(context)
    whole_ids = tokenizer.encode(context + continuation)
    # The continuation's tokens as the joint text tokenizes them: a piece spanning the boundary
    # (a context ending in a space) is scored with the continuation.
    shared = 0
    while shared < min(len(context_ids), len(whole_ids)) and context_ids[shared] == whole_ids[shared]:
        shared += 1
    continuation_ids = whole_ids[shared:]
    if not continuation_ids or len(continuation_ids) > seq_len:
        raise ConfigError(f"the choice {continuation!r} is {len(continuation_ids)} tokens: a choice must be 1 to "
                          f"data.seq_len={seq_len} tokens")
    sequence = ([tokenizer.eos_id] + whole_ids)[-(seq_len + 1):]
    num = len(sequence) - 1
    row = {key: np.zeros(seq_len, np.int32) for key in ("inputs", "targets", "positions", "segment_ids")}
    row["inputs"][:num], row["targets"][:num] = sequence[:-1], sequence[1:]
    row["positions"][:num], row["segment_ids"][:num] = np.arange(num), 1
    row["weights"] = np.zeros(seq_len, np.float32)
    row["weights"][num - len(continuation_ids):num] = 1.0
    return row


def _log_likelihoods(scorer: Scorer, rows: list[dict], progress: bool) -> np.ndarray:
    """Summed log-likelihood (nats) of each row's weighted targets."""
    model, objective = scorer.run.model, scorer.objective

    @jax.jit
    def row_log_likelihood(params, batch):
        logits, targets, weights = objective.predictions(model, params, batch, None, True)
        nll, _, _ = losses.nll_and_correct(logits, targets)
        return -jnp.sum(nll * weights, axis=-1)

    scores = []
    total = math.ceil(len(rows) / scorer.batch_size)
    with sharding.activation_rules(scorer.mesh):
        for batch in tqdm.tqdm(_batches_of(rows, scorer.batch_size), total=total, desc="scoring", unit="batch",
                               disable=not progress):
            scores.append(np.asarray(jax.device_get(row_log_likelihood(scorer.run.params,
                                                                       sharding.to_global(batch, scorer.mesh)))))
    return np.concatenate(scores)[:len(rows)]


def score_choices(scorer: Scorer, questions: Iterable[Question], progress: bool = True) -> dict:
    """{"accuracy" (by summed log-likelihood), "accuracy_norm" (by log-likelihood per character
    of the choice), "questions"}."""
    questions = list(questions)
    tokenizer = scorer.run.tokenizer
    rows = [continuation_row(tokenizer, q.context, choice, scorer.seq_len) for q in questions for choice in q.choices]
    log_likelihoods = _log_likelihoods(scorer, rows, progress)
    correct = correct_norm = 0
    start = 0
    for q in questions:
        scores = log_likelihoods[start:start + len(q.choices)]
        start += len(q.choices)
        characters = np.asarray([max(len(choice), 1) for choice in q.choices], np.float64)
        correct += int(np.argmax(scores)) == q.label
        correct_norm += int(np.argmax(scores / characters)) == q.label
    return {"accuracy": correct / len(questions), "accuracy_norm": correct_norm / len(questions),
            "questions": len(questions)}
