"""BERT pretraining: masked-language modelling plus next-sentence prediction.

Data: local text files split into documents (lm/data/pairs.py builds the sentence pairs and
the masks), or, with `mlm.corpus=finetune_task`, a fine-tuning task's own training inputs
(task-adaptive pretraining, as in Gururangan et al. 2020: a pretrained encoder continues its MLM
on the unlabelled text of the task it is about to learn). Loss per example: mean NLL over its
masked positions + mlm.nsp_weight x NSP NLL; the batch loss is the mean over real examples, so
microbatches combine exactly. Metrics: MLM loss and accuracy over masked positions only, NSP
loss and accuracy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import jax.numpy as jnp
import numpy as np

from lm import losses
from lm.config import Config, ConfigError
from lm.data import batching
from lm.data import corpus as corpus_lib
from lm.data import glue, packing, pairs, streaming
from lm.data import tokenizer as tokenizer_lib
from lm.tasks import base


VALIDATION_CHARS = 1_000_000  # streaming: validation pairs come from this much of the validation records


@dataclasses.dataclass(frozen=True)
class PretrainingData:
    tokenizer: tokenizer_lib.Tokenizer
    train: pairs.Documents | streaming.StreamingCorpus  # the latter with data.streaming
    validation: pairs.Documents
    ids: pairs.SpecialIds


def _read(files: list[str]) -> str:
    parts = []
    for path in files:
        with open(path, "rb") as f:
            parts.append(f.read().decode("utf-8", errors="replace"))
    return "\n\n".join(parts)


def _identity(files: list[str], boundary: str, lowercase: bool) -> str:
    digest = hashlib.sha256(f"{boundary}|{'uncased' if lowercase else 'cased'}".encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"pairs:{digest.hexdigest()[:16]}"


# Single-sentence tasks (SST-2) have no documents: consecutive training sentences are grouped
# this many to a pseudo-document, since a pair needs an anchor sentence with a successor.
TASK_SENTENCES_PER_DOCUMENT = 5


def task_text(config: Config) -> str:
    """finetune.task's training inputs as blank-line separated documents, labels dropped: a
    sentence pair is one document of its two sentences; single sentences are grouped in file
    order. Only the train split is read: the validation split stays unseen."""
    split = glue.load(config.finetune, "train", config.data.allow_download, corpus_lib.data_dir(config.data))
    if split.second is not None:
        documents = [[a, b] for a, b in zip(split.first, split.second)]
    else:
        n = TASK_SENTENCES_PER_DOCUMENT
        documents = [split.first[i:i + n] for i in range(0, len(split.first), n)]
    return "".join("\n".join(doc) + "\n\n" for doc in documents)


class MlmNsp(base.Objective):
    def init_inputs(self):
        seq_len, predictions = self.config.data.seq_len, self.config.mlm.max_predictions
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        return tokens, tokens, tokens + 1, jnp.zeros((1, predictions), jnp.int32)

    # Loss and metrics.
    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        mlm_logits, nsp_logits = model.apply(
            {"params": params}, batch["inputs"], batch["type_ids"], batch["segment_ids"], batch["mlm_positions"],
            deterministic=deterministic, rngs=None if deterministic else {"dropout": rng})
        mlm_nll, mlm_correct = losses.nll_and_correct(mlm_logits, batch["mlm_targets"])[:2]
        nsp_nll, nsp_correct = losses.nll_and_correct(nsp_logits, batch["nsp_labels"])[:2]
        mlm_w, nsp_w = batch["mlm_weights"], batch["nsp_weights"]
        per_example_mlm = jnp.sum(mlm_nll * mlm_w, axis=-1) / jnp.maximum(jnp.sum(mlm_w, axis=-1), 1.0)
        return {
            "loss_sum": jnp.sum((per_example_mlm + self.config.mlm.nsp_weight * nsp_nll) * nsp_w),
            "weight": jnp.sum(nsp_w),
            "mlm_loss_sum": jnp.sum(mlm_nll * mlm_w), "mlm_correct": jnp.sum(mlm_correct * mlm_w),
            "mlm_weight": jnp.sum(mlm_w),
            "nsp_loss_sum": jnp.sum(nsp_nll * nsp_w), "nsp_correct": jnp.sum(nsp_correct * nsp_w),
        }

    def total_weight(self, batch):
        return jnp.sum(batch["nsp_weights"])

    def train_metrics(self, sums, total_weight) -> dict:
        return {"mlm_accuracy": sums["mlm_correct"] / jnp.maximum(sums["mlm_weight"], 1.0),
                "nsp_accuracy": sums["nsp_correct"] / total_weight}

    def eval_metrics(self, totals) -> dict[str, float]:
        examples, masked = max(totals["weight"], 1.0), max(totals["mlm_weight"], 1.0)
        mlm_loss = totals["mlm_loss_sum"] / masked
        return {
            "eval/loss": totals["loss_sum"] / examples,
            "eval/mlm_loss": mlm_loss,
            "eval/mlm_perplexity": math.exp(min(mlm_loss, 50.0)),
            "eval/mlm_accuracy": totals["mlm_correct"] / masked,
            "eval/nsp_loss": totals["nsp_loss_sum"] / examples,
            "eval/nsp_accuracy": totals["nsp_correct"] / examples,
        }


class _PaddedAnchors:
    """Anchors by index; past the last one, the (-1, -1) anchor pairs.PretrainingExamples
    turns into an all-padding example."""

    def __init__(self, anchors: np.ndarray):
        self.anchors = anchors

    def __getitem__(self, index: int) -> np.ndarray:
        return self.anchors[index] if index < len(self.anchors) else np.full(2, -1, np.int32)


class MlmNspPipeline(base.Pipeline):
    @property
    def reads_data_files(self) -> bool:
        return self.config.mlm.corpus == "files"  # else finetune.task's own inputs

    def _text(self, files: list[str]) -> str:
        text = _read(files)
        return text.lower() if self.config.data.lowercase else text

    def prepare(self) -> PretrainingData:
        data, boundary = self.config.data, self.config.mlm.document_boundary
        if streaming.enabled(data) and self.config.mlm.corpus != "finetune_task":
            return self._prepare_streaming()
        if data.tfds_name:
            raise ConfigError("train.objective=mlm_nsp reads local text files with document structure: set "
                              "data.train_files (and data.validation_files) instead of data.tfds_name")
        from_task = self.config.mlm.corpus == "finetune_task"
        if from_task:  # documents are blank-line separated, whatever mlm.document_boundary says
            text, boundary = task_text(self.config), "paragraph"
            text = text.lower() if data.lowercase else text
            identity = tokenizer_lib.text_identity("pairs:task", [text])
        else:
            train_files = corpus_lib.expand_files(data.train_files, "data.train_files", corpus_lib.data_dir(data))
            text, identity = self._text(train_files), _identity(train_files, boundary, data.lowercase)
        train_docs = pairs.split_documents(text, boundary)
        if data.validation_files:
            validation_docs = pairs.split_documents(
                self._text(corpus_lib.expand_files(data.validation_files, "data.validation_files",
                                                   corpus_lib.data_dir(data))), boundary)
        else:  # hold out whole documents at the end
            cut = max(1, int(round(len(train_docs) * (1 - data.validation_fraction))))
            train_docs, validation_docs = train_docs[:cut], train_docs[cut:]
        if not train_docs or not validation_docs:
            source = f"finetune.task={self.config.finetune.task}'s training inputs" if from_task else data.train_files
            raise ConfigError(f"{source} gives {len(train_docs)} training and {len(validation_docs)} "
                              f"validation documents (mlm.document_boundary={boundary}): both need some")
        tokenizer = tokenizer_lib.load_or_train(self.config.tokenizer, (" ".join(doc) for doc in train_docs), identity,
                                                corpus_lib.cache_root(data))
        ids = pairs.SpecialIds.from_tokenizer(tokenizer)
        return PretrainingData(tokenizer, pairs.Documents.tokenize(train_docs, tokenizer),
                               pairs.Documents.tokenize(validation_docs, tokenizer), ids)

    def _prepare_streaming(self) -> PretrainingData:
        """Training pairs streamed from records (data.train: the StreamingCorpus); validation
        pairs from the first VALIDATION_CHARS of the validation records, as the pre-pass path's."""
        data = self.config.data
        corpus = streaming.prepare(data, self.config.tokenizer, validation_tokens=2)
        text, budget = [], VALIDATION_CHARS
        for source in corpus.validation:
            for index in range(len(source)):
                text.append(source[index])
                budget -= len(text[-1])
                if budget <= 0:
                    break
        text = "\n\n".join(text)
        validation = pairs.split_documents(text.lower() if data.lowercase else text, self.config.mlm.document_boundary)
        return PretrainingData(corpus.tokenizer, corpus, pairs.Documents.tokenize(validation, corpus.tokenizer),
                               pairs.SpecialIds.from_tokenizer(corpus.tokenizer))

    def _examples(self, data: PretrainingData, docs: pairs.Documents):
        return pairs.PretrainingExamples(docs, self.config.data.seq_len, data.ids, self.config.mlm)

    def train_iterator(self, data: PretrainingData, process_index: int = 0, process_count: int = 1):
        c = self.config
        if isinstance(data.train, streaming.StreamingCorpus):
            rows = pairs.StreamedPairs(c.data.seq_len, data.ids, c.mlm, c.mlm.document_boundary, c.data.lowercase)
            return streaming.train_iterator(data.train, packing.RowSpec(0, 0, rows), c.train.batch_size, c.data.seed,
                                            process_index, process_count, c.data.num_workers, c.data.seq_len)
        return iter(batching.batched(data.train.anchors(), c.train.batch_size, process_index, process_count,
                                     seed=c.data.seed, prefetch=c.data.prefetch,
                                     random_map=self._examples(data, data.train)))

    def eval_batches(self, data: PretrainingData, process_index: int = 0, process_count: int = 1):
        """A fixed set of validation pairs (same anchors, masks and partners at every
        evaluation), spread over all documents, padded to whole batches."""
        anchors = data.validation.anchors()
        anchors = anchors[np.random.default_rng(1234).permutation(len(anchors))]
        padded = _PaddedAnchors(anchors)
        return batching.eval_pass(padded, len(anchors), self.eval_batch_size, self.config.eval.max_batches,
                                  process_index, process_count, random_map=self._examples(data, data.validation),
                                  random_seed=1234)
