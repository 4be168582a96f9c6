"""Knowledge distillation: a trained teacher's softened predictions train a smaller student.

  loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

(Hinton et al., 2015: the T^2 keeps the soft term's gradients on the scale of the hard term's
as T changes.) `distillation_loss` is a pure function of logits over any leading axes: [B, L, V]
for a causal LM (each token a prediction) or [B, C] for a classifier head; the task's
`predictions` (lm/tasks) gives them for teacher and student alike, so a GPT student and a BERT
classifier student share this module (configs/distill_gpt_tiny.py, configs/distill_sst2.py).

The teacher runs inside the student's jitted train step: frozen (its forward pass is under
stop_gradient and its params are a separate, non-donated argument), sharded on the student's
mesh by the same logical-axis rules, and its logits exist only as device values in that step.
lm/assembly.py loads the teacher (`load_teacher`) when `distill.teacher_workdir` is set and
compiles this module's train step in place of the plain one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm import losses, pretrained, steps
from lm.config import Config, ConfigError, DistillConfig


def distillation_loss(student_logits, teacher_logits, labels, weights, temperature: float, alpha: float,
                      z_loss: float = 0.0) -> dict:
    """Sums over the weighted predictions (logits [..., C], labels and weights [...]):
    "loss_sum" (the objective above), "kl_sum" (nats, at temperature T, unscaled), "ce_sum",
    and cross_entropy's "z_loss_sum", "correct" and "weight"."""
    student_log_probs = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    teacher_log_probs = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    sums = losses.cross_entropy(student_logits, labels, weights, z_loss)
    kl_sum = jnp.sum(kl * weights)
    sums["ce_sum"], sums["kl_sum"] = sums["loss_sum"], kl_sum
    sums["loss_sum"] = alpha * temperature ** 2 * kl_sum + (1.0 - alpha) * sums["ce_sum"]
    return sums


def make_train_step(model, objective, teacher_model, tx, learning_rate, distill: DistillConfig,
                    microbatches: int = 1, z_loss: float = 0.0, dropout: bool = True,
                    inject_nan_at_steps: tuple[int, ...] = ()):
    """`train_step(state, batch, teacher_params) -> (state, metrics)`: steps.make_train_step
    with the distillation objective; "loss" in its metrics is that objective."""

    def loss_sums(model, params, batch, rng, deterministic):
        logits, labels, weights = objective.predictions(model, params, batch, rng, deterministic)
        return distillation_loss(logits, batch["teacher_logits"], labels, weights,
                                 distill.temperature, distill.alpha, z_loss)

    student_step = steps.make_train_step(model, _ReportingSoftAndHard(objective), tx, learning_rate, microbatches,
                                         dropout, inject_nan_at_steps, loss_sums=loss_sums)

    def train_step(state, batch, teacher_params):
        # The whole batch's teacher logits at once: microbatches then slice them like any batch field.
        teacher_logits = jax.lax.stop_gradient(
            objective.predictions(teacher_model, teacher_params, batch, None, True)[0])
        return student_step(state, dict(batch, teacher_logits=teacher_logits))

    return train_step


class _ReportingSoftAndHard:
    """The student's objective, with the two parts of the objective reported beside it:
    train/kl (nats per prediction at temperature T) and train/ce (the hard-label loss)."""

    def __init__(self, objective):
        self.objective = objective

    def total_weight(self, batch):
        return self.objective.total_weight(batch)

    def train_metrics(self, sums, total_weight):
        return {**self.objective.train_metrics(sums, total_weight), "kl": sums["kl_sum"] / total_weight,
                "ce": sums["ce_sum"] / total_weight}


def check_teacher(config: Config, student_tokenizer, teacher: pretrained.Pretrained) -> None:
    """The teacher must predict over the student's vocabulary, for the student's sequences."""
    where = f"distill.teacher_workdir={config.distill.teacher_workdir!r}"
    if teacher.tokenizer.model_proto != student_tokenizer.model_proto:
        raise ConfigError(
            f"{where} was trained with a different tokenizer than this run, so their vocabularies do not line up: "
            f"train the student with the teacher's, --config.tokenizer.path={teacher.workdir}/tokenizer.model")
    student_vocab = config.model.vocab_size or student_tokenizer.vocab_size
    if teacher.config.model.vocab_size != student_vocab:
        raise ConfigError(f"{where} has model.vocab_size={teacher.config.model.vocab_size}, the student "
                          f"{student_vocab}: set model.vocab_size to {teacher.config.model.vocab_size}")
    if teacher.config.model.num_classes != config.model.num_classes:
        raise ConfigError(f"{where} predicts {teacher.config.model.num_classes or 'tokens, not'} classes, the student "
                          f"{config.model.num_classes or 'tokens, not'} classes: distil a teacher fine-tuned on the "
                          f"student's task (finetune.task={config.finetune.task!r})")
    if teacher.config.model.positions == "learned" and teacher.config.model.max_len < config.data.seq_len:
        raise ConfigError(f"{where} has model.max_len={teacher.config.model.max_len}, shorter than this run's "
                          f"data.seq_len={config.data.seq_len}: lower data.seq_len to at most that")


def load_teacher(config: Config, objective, student_tokenizer, mesh, log=print) -> pretrained.Pretrained:
    """The teacher of `config.distill`, checked against the student and loaded onto the
    student's mesh, before anything compiles."""
    if not hasattr(objective, "predictions"):
        raise ConfigError(f"train.objective={config.train.objective!r} has no single prediction to distil (its "
                          f"objective defines no `predictions`): distillation serves causal_lm and classification")
    teacher = pretrained.load(config.distill.teacher_workdir, config.distill.teacher_step or "best", mesh=mesh, log=log)
    check_teacher(config, student_tokenizer, teacher)
    num_teacher = sum(x.size for x in jax.tree.leaves(teacher.params))
    log(f"distillation: teacher {teacher.workdir} step {teacher.step} ({num_teacher:,} parameters), "
        f"temperature {config.distill.temperature}, alpha {config.distill.alpha}")
    return teacher
