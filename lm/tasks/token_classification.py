"""Token classification (named entities): a BIO tag per word, from a per-token head on a GPT
decoder, a BERT encoder or a T5 encoder (model.classify=token, lm/models/heads.py).

Data: CoNLL files (finetune.train_files / validation_files / test_files; lm/data/conll.py). The
tag set comes from the training split ("O", then B-/I- of each type); model.num_classes must equal
its size. The first piece of each word carries its tag, the loss is the cross-entropy there.

Metrics are seqeval's entity-level precision, recall and F1 (lm/tagging.py), counted on device
over whole evaluation passes: eval/f1 selects the checkpoint. A sentence too long for a row is cut
at a word boundary outside any entity, and the entities cut off count as missed (their count
travels with the row), so the scores are those of the whole sentences.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from lm import losses, tagging
from lm.config import Config, ConfigError
from lm.data import batching, conll, rows
from lm.data import corpus as corpus_lib
from lm.tasks import base, labelled


@dataclasses.dataclass
class TaggingData:
    tokenizer: object
    label_names: list[str]
    train: labelled.Rows
    validation: labelled.Rows
    test: labelled.Rows | None
    truncated: int  # sentences cut to fit a row, over all splits


def read_split(spec: str, field: str, root: str | None = None) -> list[conll.TaggedSentence]:
    return [s for path in corpus_lib.expand_files(spec, field, root) for s in conll.read_conll(path)]


def _fit(sentence: conll.TaggedSentence, pieces: list[list[int]], budget: int) -> int:
    """How many leading words fit `budget` tokens without cutting through an entity."""
    used, keep = 0, 0
    for count, word_pieces in enumerate(pieces, 1):
        used += len(word_pieces)
        if used > budget:
            break
        if count == len(pieces) or not sentence.tags[count].startswith("I-"):
            keep = count
    return keep


def encode(sentences: list[conll.TaggedSentence], tokenizer, layout: rows.RowLayout, seq_len: int,
           label_ids: dict[str, int]) -> tuple[labelled.Rows, int]:
    columns = {k: [] for k in ("inputs", "type_ids", "segment_ids", "labels", "lost_entities")}
    truncated = 0
    for sentence in sentences:
        unknown = sorted(set(sentence.tags) - set(label_ids))
        if unknown:
            raise ConfigError(f"tags {unknown[:5]} are not in the training split's tag set {sorted(label_ids)}")
        pieces = conll.word_pieces(tokenizer, sentence.words)
        keep = _fit(sentence, pieces, seq_len - layout.overhead(pair=False))
        truncated += keep < len(sentence.words)
        ids, word_of_token = conll.flatten(tokenizer, pieces[:keep])
        inputs, type_ids, segment_ids = rows.encode(ids, None, layout, seq_len)
        labels = np.full(seq_len, conll.IGNORE, np.int32)
        start = len(layout.prefix)
        labels[start:start + len(ids)] = conll.first_piece_labels(word_of_token,
                                                                  [label_ids[t] for t in sentence.tags])
        lost = sum(1 for _, first, _ in tagging.entities(sentence.tags) if first >= keep)
        for name, value in zip(columns, (inputs, type_ids, segment_ids, labels, np.int32(lost))):
            columns[name].append(value)
    return labelled.Rows({k: np.stack(v) for k, v in columns.items()}, fill={"labels": conll.IGNORE}), truncated


class TokenClassification(labelled.HeadObjective):
    selection = ("eval/f1", True)

    def __init__(self, config: Config):
        super().__init__(config)
        self._label_names: list[str] | None = None

    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        logits_BLC = labelled.logits(model, params, batch, self.config.model.family, rng, deterministic)
        labels_BL = batch["labels"]
        weights_BL = (labels_BL >= 0).astype(jnp.float32)
        nll_BL, correct_BL, _ = losses.nll_and_correct(logits_BLC, jnp.maximum(labels_BL, 0))
        sums = {"loss_sum": jnp.sum(nll_BL * weights_BL), "weight": jnp.sum(weights_BL),
                "correct": jnp.sum(correct_BL * weights_BL)}
        if deterministic:  # entity counts: evaluation only
            prefix_C, type_C = (jnp.asarray(c) for c in tagging.tag_codes(self._names()))
            correct, predicted, true = tagging.entity_sums(jnp.argmax(logits_BLC, -1), jnp.maximum(labels_BL, 0),
                                                          labels_BL >= 0, prefix_C, type_C)
            sums.update(entities_correct=correct, entities_predicted=predicted,
                        entities_true=true + jnp.sum(batch["lost_entities"]))
        return sums

    def _names(self) -> list[str]:
        """The training split's tag set: the device side needs it to tell B-, I- and types apart
        (a trace-time constant; read once)."""
        if self._label_names is None:
            self._label_names = conll.label_names(read_split(self.config.finetune.train_files,
                                                             "finetune.train_files",
                                                             corpus_lib.data_dir(self.config.data)))
        return self._label_names

    def total_weight(self, batch):
        return jnp.sum((batch["labels"] >= 0).astype(jnp.float32))

    def train_metrics(self, sums, total_weight) -> dict:
        return {"accuracy": sums["correct"] / total_weight}

    def eval_metrics(self, totals) -> dict[str, float]:
        counts = tagging.EntityCounts(totals["entities_correct"], totals["entities_predicted"], totals["entities_true"])
        return {"eval/loss": totals["loss_sum"] / max(totals["weight"], 1.0),
                "eval/accuracy": totals["correct"] / max(totals["weight"], 1.0),
                **{f"eval/{k}": v for k, v in counts.scores().items()}}


class TokenClassificationPipeline(base.Pipeline):
    reads_data_files = False  # finetune.*_files

    def prepare(self) -> TaggingData:
        c = self.config
        labelled.require_files(c, "token_classification")
        f = c.finetune
        root = corpus_lib.data_dir(c.data)  # relative files: also in the data directory
        train = read_split(f.train_files, "finetune.train_files", root)
        validation = read_split(f.validation_files, "finetune.validation_files", root)
        test = read_split(f.test_files, "finetune.test_files", root) if f.test_files else None
        if c.data.lowercase:  # an uncased encoder's words (tags unchanged)
            train, validation, test = ([conll.TaggedSentence(tuple(w.lower() for w in s.words), s.tags) for s in split]
                                       if split is not None else None for split in (train, validation, test))
        names = conll.label_names(train)
        if c.model.num_classes != len(names):
            raise ConfigError(f"the training split has {len(names)} tags ({', '.join(names)}): set "
                              f"model.num_classes={len(names)} (got {c.model.num_classes})")
        tokenizer = labelled.tokenizer_for(c, [" ".join(s.words) for s in train], "conll")
        layout = rows.RowLayout.for_family(c.model.family, tokenizer)
        label_ids = {name: i for i, name in enumerate(names)}
        encoded = [encode(split, tokenizer, layout, c.data.seq_len, label_ids) if split is not None else (None, 0)
                   for split in (train, validation, test)]
        return TaggingData(tokenizer, names, encoded[0][0], encoded[1][0], encoded[2][0],
                           sum(count for _, count in encoded))

    def train_iterator(self, data: TaggingData, process_index: int = 0, process_count: int = 1):
        c = self.config
        return iter(batching.batched(data.train, c.train.batch_size, process_index, process_count, seed=c.data.seed,
                                     prefetch=c.data.prefetch))

    def eval_batches(self, data: TaggingData, process_index: int = 0, process_count: int = 1):
        return batching.eval_pass(data.validation, len(data.validation), self.eval_batch_size,
                                  self.config.eval.max_batches, process_index, process_count)

    def test_batches(self, data: TaggingData, process_index: int = 0, process_count: int = 1):
        if data.test is None:
            return None
        return batching.eval_pass(data.test, len(data.test), self.eval_batch_size, 0, process_index, process_count)

    def report_fields(self, data: TaggingData) -> dict:
        return {"task": "token_classification", "label_names": data.label_names,
                "validation_sentences": len(data.validation), "test_sentences": len(data.test or []),
                "sentences_truncated": data.truncated}
