"""Extractive question answering: start and end scores per token from a per-token head with two
classes (model.classify=token, num_classes=2) on a GPT decoder or a BERT encoder.

Data: SQuAD-format JSON (finetune.train_files / validation_files / test_files; lm/data/squad.py),
long contexts split into overlapping windows (finetune.doc_stride). Training: cross-entropy of
the labelled start and of the end over each window's positions (position 0 where the window does
not hold the answer, as BERT does).

Evaluation is SQuAD's: exact match and F1 of the answer text after the usual normalisation,
best over the reference answers, in percent (lm/extractive_qa.py). The eval step finds each
window's best span on device (start <= end, at most finetune.max_answer_tokens) and writes its
(start, end, score) into per-window vectors that add up across batches like any other sum; the
host then takes each example's best window and scores its text. eval/exact_match or eval/f1
select the checkpoint (finetune.select_metric; f1 is the usual choice).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lm import extractive_qa
from lm.config import Config, ConfigError
from lm.data import batching, rows, squad
from lm.data import corpus as corpus_lib
from lm.tasks import base, labelled

_SPLITS = ("validation", "test")


@dataclasses.dataclass
class QASplit:
    examples: list[squad.QAExample]
    windows: list[squad.QAWindow]
    rows: labelled.Rows


@dataclasses.dataclass
class QAData:
    tokenizer: object
    train: QASplit
    validation: QASplit
    test: QASplit | None


def _rows(windows: list[squad.QAWindow], seq_len: int, pad: int, split_code: int) -> labelled.Rows:
    count = len(windows)
    arrays = {"inputs": np.full((count, seq_len), pad, np.int32), "type_ids": np.zeros((count, seq_len), np.int32),
              "segment_ids": np.zeros((count, seq_len), np.int32), "context_mask": np.zeros((count, seq_len), bool),
              "start": np.zeros(count, np.int32), "end": np.zeros(count, np.int32),
              "window_index": np.arange(count, dtype=np.int32), "weights": np.ones(count, np.float32),
              "split_code": np.full(count, split_code, np.int32)}
    for i, w in enumerate(windows):
        length = len(w.input_ids)
        arrays["inputs"][i, :length] = w.input_ids
        arrays["type_ids"][i, :length] = w.segment_ids
        arrays["segment_ids"][i, :length] = 1
        arrays["context_mask"][i, :length] = w.context_spans[:, 1] > w.context_spans[:, 0]
        arrays["start"][i], arrays["end"][i] = w.start_position, w.end_position
    return labelled.Rows(arrays)


@functools.cache
def prepare(config: Config) -> QAData:
    """Read, tokenize and window every split once per process (the pipeline's data, and the sizes
    and offsets the objective needs to turn per-window spans into answers)."""
    f, seq_len = config.finetune, config.data.seq_len
    labelled.require_files(config, "extractive_qa")
    root = corpus_lib.data_dir(config.data)  # relative files: also in the data directory
    read = lambda spec, field: [e for path in corpus_lib.expand_files(spec, field, root)  # noqa: E731
                                for e in squad.read_squad_json(path)]
    train = read(f.train_files, "finetune.train_files")
    splits = {"validation": read(f.validation_files, "finetune.validation_files"),
              "test": read(f.test_files, "finetune.test_files") if f.test_files else None}
    tokenizer = labelled.tokenizer_for(config, [t for e in train for t in (e.context, e.question)], "squad")
    row_layout = rows.RowLayout.for_family(config.model.family, tokenizer)
    layout = squad.Layout(row_layout.prefix, row_layout.separator, row_layout.suffix)

    def split(examples, code):
        windows = [w for i, e in enumerate(examples)
                   for w in squad.windows(e, i, tokenizer, layout, seq_len, f.doc_stride, f.max_question_tokens)]
        return QASplit(examples, windows, _rows(windows, seq_len, tokenizer.pad_id, code))

    return QAData(tokenizer, split(train, 0), split(splits["validation"], 1),
                  split(splits["test"], 2) if splits["test"] is not None else None)


def best_spans(start_BL, end_BL, context_BL, max_answer_tokens: int):
    """Per row: (start, end, score) of the highest start + end logit over context tokens with
    start <= end < start + max_answer_tokens (lm/extractive_qa.py's best_span, batched)."""
    length = start_BL.shape[1]
    offset = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]
    allowed_LL = (offset >= 0) & (offset < max_answer_tokens)
    scores_BLL = jnp.where(context_BL[:, :, None] & context_BL[:, None, :] & allowed_LL[None],
                           start_BL[:, :, None] + end_BL[:, None, :], -jnp.inf)
    flat = jnp.argmax(scores_BLL.reshape(start_BL.shape[0], -1), axis=-1)
    score = jnp.take_along_axis(scores_BLL.reshape(start_BL.shape[0], -1), flat[:, None], axis=-1)[:, 0]
    return flat // length, flat % length, score


class ExtractiveQA(labelled.HeadObjective):
    def __init__(self, config: Config):
        super().__init__(config)
        if config.finetune.select_metric not in ("f1", "accuracy"):
            raise ConfigError("train.objective=extractive_qa selects by finetune.select_metric=f1 (or accuracy: "
                              "exact match)")
        self.selection = ("eval/f1" if config.finetune.select_metric == "f1" else "eval/exact_match", True)

    def _logits(self, model, params, batch, rng, deterministic):
        logits_BL2 = labelled.logits(model, params, batch, self.family, rng, deterministic)
        real_BL = batch["segment_ids"] > 0
        return jnp.where(real_BL, logits_BL2[..., 0], -1e9), jnp.where(real_BL, logits_BL2[..., 1], -1e9)

    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        start_BL, end_BL = self._logits(model, params, batch, rng, deterministic)
        weights_B = batch["weights"]
        nll_B = sum(-jnp.take_along_axis(jax.nn.log_softmax(scores, -1), batch[name][:, None], axis=-1)[:, 0]
                    for scores, name in ((start_BL, "start"), (end_BL, "end"))) / 2
        return {"loss_sum": jnp.sum(nll_B * weights_B), "weight": jnp.sum(weights_B)}

    def total_weight(self, batch):
        return jnp.sum(batch["weights"])

    def eval_sums(self, model, params, batch) -> dict:
        start_BL, end_BL = self._logits(model, params, batch, None, True)
        sums = self.loss_sums(model, params, batch, None, True)
        start_B, end_B, score_B = best_spans(start_BL, end_BL, batch["context_mask"],
                                             self.config.finetune.max_answer_tokens)
        weights_B = batch["weights"]
        size = max(len(s.windows) for s in self._data_splits())
        index_B = batch["window_index"]
        for name, value in (("span_start", start_B), ("span_end", end_B), ("span_score", score_B)):
            value = jnp.where(weights_B > 0, jnp.where(jnp.isfinite(value), value, -1e9), 0).astype(jnp.float32)
            sums[name] = jnp.zeros(size, jnp.float32).at[index_B].add(value)
        sums["split_code"] = jnp.sum(batch["split_code"] * weights_B)
        return sums

    def _data_splits(self) -> list[QASplit]:
        data = prepare(self.config)
        return [data.validation] + ([data.test] if data.test is not None else [])

    def eval_metrics(self, totals) -> dict[str, float]:
        data = prepare(self.config)
        split = data.test if totals["split_code"] > totals["weight"] * 1.5 else data.validation
        best: dict[int, tuple[float, str]] = {}
        for i, window in enumerate(split.windows):
            start, end, score = (int(totals["span_start"][i]), int(totals["span_end"][i]),
                                 float(totals["span_score"][i]))
            example = split.examples[window.example_index]
            if window.context_spans[start, 1] <= window.context_spans[start, 0]:
                continue  # a window without context tokens
            text = extractive_qa.answer_text(example.context, window.context_spans, start, end)
            if window.example_index not in best or score > best[window.example_index][0]:
                best[window.example_index] = (score, text)
        predictions = [best.get(i, (0.0, ""))[1] for i in range(len(split.examples))]
        scores = extractive_qa.scores(predictions, [e.answers for e in split.examples])
        return {"eval/loss": totals["loss_sum"] / max(totals["weight"], 1.0),
                "eval/exact_match": scores["exact_match"], "eval/f1": scores["f1"]}


class ExtractiveQAPipeline(base.Pipeline):
    reads_data_files = False  # finetune.*_files

    def prepare(self) -> QAData:
        return prepare(self.config)

    def train_iterator(self, data: QAData, process_index: int = 0, process_count: int = 1):
        c = self.config
        return iter(batching.batched(data.train.rows, c.train.batch_size, process_index, process_count,
                                     seed=c.data.seed, prefetch=c.data.prefetch))

    def eval_batches(self, data: QAData, process_index: int = 0, process_count: int = 1):
        # Every window: an example's answer may be in any of them (eval.max_batches does not apply).
        rows_ = data.validation.rows
        return batching.eval_pass(rows_, len(rows_), self.eval_batch_size, 0, process_index, process_count)

    def test_batches(self, data: QAData, process_index: int = 0, process_count: int = 1):
        if data.test is None:
            return None
        rows_ = data.test.rows
        return batching.eval_pass(rows_, len(rows_), self.eval_batch_size, 0, process_index, process_count)

    def report_fields(self, data: QAData) -> dict:
        return {"task": "extractive_qa", "validation_examples": len(data.validation.examples),
                "validation_windows": len(data.validation.windows),
                "test_examples": len(data.test.examples) if data.test is not None else 0}
