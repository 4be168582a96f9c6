"""Sentence(-pair) classification: BERT's pooled [CLS] (or mean) output, a GPT decoder's last
real token (or mean over real tokens, model.pooling; lm/models/heads.py), or the mean of a T5
encoder's states (lm/models/t5.py), into any number of classes.

Data: finetune.task's GLUE data (SST-2, MRPC, RTE: local files or tfds), or the user's CSV, TSV
or JSON lines (finetune.train_files / validation_files / test_files, text_fields, label_field;
lm/data/labelled_files.py). A test split is scored once, on the checkpoint the validation split
selected, and reported apart (eval_report.json: test/...).

The model usually starts from a pretraining run (`init_from`, lm/init_from.py), whose
tokenizer this run then reuses. Evaluation sums a confusion matrix, so accuracy, precision,
recall and F1 (of class 1 for two classes, macro-averaged for more) are exact over the whole
validation split. The validation metric `finetune.select_metric` drives early stopping and
the best checkpoint; at the end the best checkpoint is evaluated again and written to
`<workdir>/eval_report.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax.numpy as jnp
import numpy as np

from lm import losses
from lm.config import Config, ConfigError
from lm.data import batching, glue, labelled_files, rows
from lm.data import corpus as corpus_lib
from lm.data import tokenizer as tokenizer_lib
from lm.tasks import base, labelled


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    tokenizer: tokenizer_lib.Tokenizer
    train: glue.EncodedSplit
    validation: glue.EncodedSplit
    test: glue.EncodedSplit | None  # finetune.test_files: scored once, on the selected checkpoint
    label_names: list[str]


def metrics_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """confusion[true, predicted] counts -> accuracy, precision, recall, F1: of class 1 for two
    classes (scikit-learn's average="binary"), else macro-averaged (average="macro")."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    pick = (lambda v: float(v[1])) if len(confusion) == 2 else (lambda v: float(np.mean(v)))
    return {"accuracy": float(true_positive.sum() / max(confusion.sum(), 1.0)), "precision": pick(precision),
            "recall": pick(recall), "f1": pick(f1)}


class Classification(labelled.HeadObjective):
    def __init__(self, config: Config):
        super().__init__(config)
        self.num_classes = config.model.num_classes
        expected = glue.NUM_CLASSES[config.finetune.task]
        if not config.finetune.train_files and self.num_classes != expected:  # the user's files: checked on reading
            raise ConfigError(f"finetune.task={config.finetune.task} has {expected} classes but model.num_classes="
                              f"{self.num_classes}: set model.num_classes={expected}")
        # Classification has always carried the scaling steps: its older workdirs resume with them.
        self.update_scale = self.learning_rate_factor
        # The validation metric that picks the best checkpoint and stops early (higher is better).
        self.selection = (f"eval/{config.finetune.select_metric}", True)

    # Loss and metrics.
    def predictions(self, model, params, batch, rng, deterministic: bool):
        """(class logits [B, C], labels [B], weights [B]): what knowledge distillation softens."""
        logits_BC = labelled.logits(model, params, batch, self.family, rng, deterministic)
        return logits_BC, batch["labels"], batch["weights"]

    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        logits_BC = self.predictions(model, params, batch, rng, deterministic)[0]
        nll_B = losses.nll_and_correct(logits_BC, batch["labels"])[0]
        predicted_B = jnp.argmax(logits_BC, axis=-1)
        weights_B = batch["weights"]
        sums = {"loss_sum": jnp.sum(nll_B * weights_B), "weight": jnp.sum(weights_B),
                "correct": jnp.sum((predicted_B == batch["labels"]) * weights_B)}
        for true in range(self.num_classes):  # scalar sums, so hosts and batches add them like any other
            for guess in range(self.num_classes):
                hit = (batch["labels"] == true) & (predicted_B == guess)
                sums[f"confusion_{true}_{guess}"] = jnp.sum(hit * weights_B)
        return sums

    def total_weight(self, batch):
        return jnp.sum(batch["weights"])

    def train_metrics(self, sums, total_weight) -> dict:
        return {"accuracy": sums["correct"] / total_weight}

    def eval_sums(self, model, params, batch) -> dict:
        return self.loss_sums(model, params, batch, None, True)

    def eval_metrics(self, totals) -> dict[str, float]:
        confusion = np.zeros((self.num_classes, self.num_classes))
        for key, value in totals.items():
            if match := re.fullmatch(r"confusion_(\d+)_(\d+)", key):
                confusion[int(match[1]), int(match[2])] = value
        scores = metrics_from_confusion(confusion)
        return {"eval/loss": totals["loss_sum"] / max(totals["weight"], 1.0),
                **{f"eval/{name}": value for name, value in scores.items()}}


class ClassificationPipeline(base.Pipeline):
    reads_data_files = False  # finetune.*_files

    def _tokenizer(self, train_texts) -> tokenizer_lib.Tokenizer:
        c = self.config  # with init_from, assembly.build has set tokenizer.path to the pretraining run's
        texts = list(train_texts)
        return tokenizer_lib.load_or_train(c.tokenizer, texts, tokenizer_lib.text_identity("glue", texts),
                                           corpus_lib.cache_root(c.data))

    def _splits(self):
        """(train, validation, test or None, label names) from the user's files or finetune.task's."""
        c, f = self.config, self.config.finetune
        if not f.train_files:
            root = corpus_lib.data_dir(c.data)
            return (glue.load(f, "train", c.data.allow_download, root),
                    glue.load(f, "validation", c.data.allow_download, root),
                    None, [str(i) for i in range(glue.NUM_CLASSES[f.task])])
        labelled.require_files(c, "classification")
        fields = [name.strip() for name in f.text_fields.split(",") if name.strip()]
        root = corpus_lib.data_dir(c.data)  # relative files: also in the data directory
        train, names = labelled_files.read_split(f.train_files, "finetune.train_files", fields, f.label_field,
                                                 root=root)
        if len(names) != c.model.num_classes:
            raise ConfigError(f"finetune.train_files has {len(names)} labels ({', '.join(names[:10])}): set "
                              f"model.num_classes={len(names)} (got {c.model.num_classes})")
        validation, _ = labelled_files.read_split(f.validation_files, "finetune.validation_files", fields,
                                                  f.label_field, names, root)
        test = labelled_files.read_split(f.test_files, "finetune.test_files", fields, f.label_field, names, root)[0] \
            if f.test_files else None
        return train, validation, test, names

    def prepare(self) -> ClassificationData:
        c = self.config
        train, validation, test, names = self._splits()
        if c.data.lowercase:
            train, validation = glue.lowercased(train), glue.lowercased(validation)
            test = glue.lowercased(test) if test is not None else None
        tokenizer = self._tokenizer(iter(train.first + (train.second or [])))
        encode = glue.encode if c.model.family == "bert" else functools.partial(
            _encode_rows, layout=rows.RowLayout.for_family(c.model.family, tokenizer))
        return ClassificationData(tokenizer, encode(train, tokenizer, c.data.seq_len),
                                  encode(validation, tokenizer, c.data.seq_len),
                                  encode(test, tokenizer, c.data.seq_len) if test is not None else None, names)

    def train_iterator(self, data: ClassificationData, process_index: int = 0, process_count: int = 1):
        c = self.config
        return iter(batching.batched(data.train, c.train.batch_size, process_index, process_count, seed=c.data.seed,
                                     prefetch=c.data.prefetch))

    def eval_batches(self, data: ClassificationData, process_index: int = 0, process_count: int = 1):
        return batching.eval_pass(data.validation, len(data.validation), self.eval_batch_size,
                                  self.config.eval.max_batches, process_index, process_count)

    def test_batches(self, data: ClassificationData, process_index: int = 0, process_count: int = 1):
        if data.test is None:
            return None
        return batching.eval_pass(data.test, len(data.test), self.eval_batch_size, 0, process_index, process_count)

    def report_fields(self, data: ClassificationData) -> dict:
        """At the end of the run the loop evaluates the best checkpoint into eval_report.json."""
        f = self.config.finetune
        return {"task": "user files" if f.train_files else f.task, "label_names": data.label_names,
                "validation_examples": len(data.validation),
                "test_examples": len(data.test) if data.test is not None else 0}


def _encode_rows(split: glue.LabelledSplit, tokenizer, seq_len: int, layout: rows.RowLayout) -> glue.EncodedSplit:
    """A decoder's rows (lm/data/rows.py): EOS a (EOS b), the pair cut to fit as glue.encode cuts it."""
    second = split.second if split.second is not None else [None] * len(split.first)
    columns = []
    for a, b in zip(split.first, second):
        ids_a = np.asarray(tokenizer.encode(a), np.int32)
        ids_b = None if b is None else np.asarray(tokenizer.encode(b), np.int32)
        ids_a, ids_b = glue.truncate_pair(ids_a, ids_b, seq_len - layout.overhead(ids_b is not None))
        columns.append(rows.encode(ids_a, ids_b, layout, seq_len))
    inputs, type_ids, segment_ids = (np.stack(column) for column in zip(*columns))
    return glue.EncodedSplit(inputs, type_ids, segment_ids, split.labels)
