"""Training objectives: what a run's data, loss and metrics are, behind one small interface.

The loop (lm/trainer.py), the pure steps (lm/steps.py), checkpoints, meshes and the fault
handling are shared by every model family; a task brings only what differs:

  prepare()                      -> data object with a `.tokenizer` (tokenized, cached)
  train_iterator(data, i, n)     -> endless batches for process i of n (grain, with get/set_state)
  eval_batches(data, i, n)       -> one pass over the validation split, padded to whole batches
  init_inputs()                  -> the positional arrays `model.init` is called with
  loss_sums(model, params, batch, rng, deterministic)
                                 -> sums: "loss_sum" (the objective, summed), "weight" (what it
                                    is divided by), optional "z_loss_sum", and any other sums the
                                    metrics use. Sums, not means, so microbatches, devices and
                                    evaluation batches combine exactly.
  predictions(model, params, batch, rng, deterministic)
                                 -> (logits [..., C], labels [...], weights [...]) for tasks whose
                                    objective is one cross-entropy: what knowledge distillation
                                    (lm/distill.py) softens, for teacher and student alike
  total_weight(batch)            -> the divisor of the whole batch, known before the forward pass
                                    (so gradient accumulation over microbatches is exact)
  train_metrics(sums, total)     -> {name: value} reported beside loss, grad_norm, learning rate
  eval_sums(model, params, batch)-> sums for evaluation (loss_sums plus whatever eval reports)
  eval_metrics(totals)           -> {"eval/<name>": float}; must include "eval/loss"
  sample(run, params)            -> text shown at the end of a run, or None

Optional (lm/tasks/classification.py has them; the trainer uses defaults otherwise):
  selection                      -> (eval metric name, higher is better) for early stopping and
                                    the best checkpoint; default ("eval/loss", False)
  update_scale(path)             -> learning-rate factor of one parameter (0 freezes it)
  init_from_subtree              -> the params subtree `init_from` restores (the rest stays freshly
                                    initialised); default: every parameter
  write_report(run, workdir, evaluate, checkpointer)
                                 -> called once at the end of a run (fine-tuning: eval_report.json)

Tasks are chosen by `train.objective`; `get(config)` returns the task object.
"""

from __future__ import annotations

from typing import Any, Protocol

from lm.config import Config


class Task(Protocol):
    """The required part of the interface above (the optional attributes are read with getattr)."""
    config: Config

    def prepare(self) -> Any: ...
    def train_iterator(self, data, process_index: int = 0, process_count: int = 1): ...
    def eval_batches(self, data, process_index: int = 0, process_count: int = 1): ...
    def init_inputs(self) -> tuple: ...
    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict: ...
    def total_weight(self, batch): ...
    def train_metrics(self, sums, total_weight) -> dict: ...
    def eval_sums(self, model, params, batch) -> dict: ...
    def eval_metrics(self, totals) -> dict[str, float]: ...
    def sample(self, run, params) -> str | None: ...


def get(config: Config) -> Task:
    from lm.tasks import causal_lm  # noqa: PLC0415 (tasks import the data stack)
    from lm.tasks import classification, mlm_nsp  # noqa: PLC0415

    from lm.tasks import seq2seq, span_corruption  # noqa: PLC0415

    objectives = {"causal_lm": causal_lm.CausalLM, "mlm_nsp": mlm_nsp.MlmNsp,
                  "classification": classification.Classification,
                  "span_corruption": span_corruption.SpanCorruption, "seq2seq": seq2seq.Seq2Seq,
                  "prefix_lm": span_corruption.PrefixLM, "denoise": span_corruption.Denoising}
    return objectives[config.train.objective](config)
