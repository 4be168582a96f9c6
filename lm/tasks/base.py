"""The two halves of a training objective, and their shared defaults.

A task is what differs between runs of different objectives; everything else (the loop,
the jitted steps, checkpoints, meshes, fault handling) is shared. It has two sides that
never meet:

`Objective`, the device side: pure functions traced inside the jitted train and eval steps.

  init_inputs()                   -> the positional arrays `model.init` is called with
  loss_sums(model, params, batch, rng, deterministic)
                                  -> sums: "loss_sum" (the objective, summed), "weight" (what it
                                     is divided by), optional "z_loss_sum", and any other sums the
                                     metrics use. Sums, not means, so microbatches, devices and
                                     evaluation batches combine exactly.
  total_weight(batch)             -> the divisor of the whole batch, known before the forward pass
                                     (so gradient accumulation over microbatches is exact)
  train_metrics(sums, total)      -> {name: value} reported beside loss, grad_norm, learning rate
  eval_sums(model, params, batch) -> sums for evaluation (default: loss_sums without z-loss)
  eval_metrics(totals)            -> {"eval/<name>": float} on the host; must include "eval/loss"
  predictions(model, params, batch, rng, deterministic)
                                  -> (logits [..., C], labels [...], weights [...]) for objectives
                                     that are one cross-entropy: what knowledge distillation
                                     (lm/distill.py) softens, for teacher and student alike
  update_scale(path)              -> learning-rate factor of one parameter (0 freezes it); optional
  selection                       -> (eval metric, higher is better): early stopping and the best
                                     checkpoint
  init_from_subtree               -> the params subtree `init_from` restores (None: all of them)
  init_from_new                   -> top-level params init_from leaves fresh when it restores all the
                                     others (a classifier head the pretrained run does not have)

`Pipeline`, the host side: data in, text out.

  prepare()                       -> a data object with a `.tokenizer` (tokenized, cached)
  train_iterator(data, i, n)      -> endless batches for process i of n (with get/set_state)
  eval_batches(data, i, n)        -> one pass over the validation split, padded to whole batches
                                     (lm/data/batching.py: `eval_pass`)
  test_batches(data, i, n)        -> None, or one pass over a held-out test split: the end-of-run
                                     report scores the best checkpoint on it (test/...), apart from
                                     the validation split that selected it
  sample(model, params, data)     -> text shown at the end of a run, or None
  report_fields(data)             -> None, or fields for `eval_report.json`: the loop then
                                     evaluates the best checkpoint at the end of the run and
                                     writes them beside its metrics
  reads_data_files                -> whether data.train_files / validation_files are read (and
                                     so recorded for resume checks); default True

Neither side sees the trainer: the loop hands each what it needs.
"""

from __future__ import annotations

import dataclasses
import math

from lm.config import Config


class Objective:
    selection: tuple[str, bool] = ("eval/loss", False)
    init_from_subtree: str | None = None
    init_from_new: tuple[str, ...] = ()

    def __init__(self, config: Config):
        self.config = config

    def init_inputs(self) -> tuple:
        raise NotImplementedError

    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        raise NotImplementedError

    def total_weight(self, batch):
        raise NotImplementedError

    def train_metrics(self, sums, total_weight) -> dict:
        del sums, total_weight
        return {}

    def eval_sums(self, model, params, batch) -> dict:
        # z-loss is a training term; evaluation reports the objective alone.
        sums = self.loss_sums(model, params, batch, None, True)
        sums.pop("z_loss_sum", None)
        return sums

    def eval_metrics(self, totals) -> dict[str, float]:
        return {"eval/loss": totals["loss_sum"] / max(totals["weight"], 1.0)}

    # Optional `update_scale(path) -> float`; None (no per-parameter scaling) keeps the optimizer
    # state free of the scaling transforms, so checkpoints of runs without it keep their layout.
    update_scale = None


def token_metrics(totals) -> dict[str, float]:
    """Loss (nats per target token), perplexity and accuracy of a token-level cross-entropy."""
    loss = totals["loss_sum"] / max(totals["weight"], 1.0)
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0)),
            "eval/accuracy": totals["correct"] / max(totals["weight"], 1.0)}


class Pipeline:
    # Whether the run reads the corpus files data.train_files / validation_files, which a resumed
    # run must still find (lm/trainer.py). The fine-tuning tasks read finetune.*_files instead and
    # must not need a corpus their config merely inherits.
    reads_data_files: bool = True

    def __init__(self, config: Config):
        self.config = config

    @property
    def eval_batch_size(self) -> int:
        return self.config.eval.batch_size or self.config.train.batch_size

    def prepare(self):
        raise NotImplementedError

    def train_iterator(self, data, process_index: int = 0, process_count: int = 1):
        raise NotImplementedError

    def eval_batches(self, data, process_index: int = 0, process_count: int = 1):
        raise NotImplementedError

    def test_batches(self, data, process_index: int = 0, process_count: int = 1):
        del data, process_index, process_count
        return None

    def sample(self, model, params, data) -> str | None:
        del model, params, data
        return None

    def report_fields(self, data) -> dict | None:
        del data
        return None


@dataclasses.dataclass(frozen=True)
class Task:
    objective: Objective
    pipeline: Pipeline
