"""Knowledge distillation (lm/distill.py): the objective's arithmetic, the teacher inside the
jitted step, and a real teacher -> student run on tiny-shakespeare."""

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import assembly, distill, losses, pretrained, trainer

from conftest import small_config

pytestmark = pytest.mark.distill


def test_objective_is_the_weighted_sum_of_scaled_kl_and_cross_entropy():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 5, 11)), rng.normal(size=(2, 5, 11))
    labels, weights = rng.integers(0, 11, size=(2, 5)), np.ones((2, 5), np.float32)
    weights[1, 3:] = 0
    T, alpha = 3.0, 0.3
    sums = distill.distillation_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(labels),
                                     jnp.asarray(weights), T, alpha)

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p_teacher = np.exp(log_softmax(teacher / T))
    kl = (p_teacher * (log_softmax(teacher / T) - log_softmax(student / T))).sum(-1)
    ce = -np.take_along_axis(log_softmax(student), labels[..., None], -1)[..., 0]
    expected = alpha * T ** 2 * (kl * weights).sum() + (1 - alpha) * (ce * weights).sum()
    np.testing.assert_allclose(float(sums["loss_sum"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(sums["ce_sum"]),
                               float(losses.cross_entropy(jnp.asarray(student), jnp.asarray(labels),
                                                          jnp.asarray(weights))["loss_sum"]), rtol=1e-6)
    same = distill.distillation_loss(jnp.asarray(teacher), jnp.asarray(teacher), jnp.asarray(labels),
                                     jnp.asarray(weights), T, 1.0)
    assert abs(float(same["loss_sum"])) < 1e-5  # a student equal to its teacher has nothing to learn


def _teacher_config(teacher_workdir, **overrides):
    """A student of the teacher's vocabulary, smaller than the teacher (2 x 64 in small_config)."""
    values = {"model.embed_dim": 32, "model.mlp_dim": 128, "train.steps": 30, "eval.every_steps": 30,
              "checkpoint.every_steps": 30, "optimizer.learning_rate": 3e-3,
              "tokenizer.path": os.path.join(teacher_workdir, "tokenizer.model"),
              "distill.teacher_workdir": teacher_workdir}
    values.update(overrides)
    return small_config(**values)


def test_a_student_equal_to_its_teacher_gets_zero_loss_and_gradient(trained_tiny_workdir):
    """The teacher really runs inside the step: alpha=1 and identical params give loss 0."""
    config = _teacher_config(trained_tiny_workdir, **{"model.embed_dim": 64, "model.mlp_dim": 256,
                                                      "distill.alpha": 1.0})
    run = assembly.build(config)
    teacher = pretrained.load(trained_tiny_workdir)
    state = run.init_fn().replace(params=teacher.params)
    batch = next(run.task.pipeline.train_iterator(run.data))
    _, metrics = run.train_step(state, batch)
    assert abs(float(metrics["loss"])) < 1e-5 and float(metrics["grad_norm"]) < 1e-4
    assert float(metrics["ce"]) > 1.0  # while the hard-label loss of the same predictions is not zero


def test_distilled_student_trains_and_reports_both_terms(trained_tiny_workdir, tmp_path):
    workdir = str(tmp_path / "student")
    final = trainer.train(_teacher_config(trained_tiny_workdir), workdir)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [r for r in records if "train/kl" in r]
    assert train and all(np.isfinite(r["train/kl"]) and np.isfinite(r["train/ce"]) for r in train)
    assert train[-1]["train/loss"] < train[0]["train/loss"]
    assert final["eval/loss"] < 6.0  # log(512) = 6.24 is a uniform guess


def test_a_teacher_with_another_tokenizer_is_refused_before_compiling(trained_tiny_workdir, tmp_path):
    config = _teacher_config(trained_tiny_workdir, **{"tokenizer.path": "", "tokenizer.vocab_size": 400})
    with pytest.raises(config_lib.ConfigError, match="different tokenizer"):
        assembly.build(config)


@pytest.fixture(scope="module")
def classifier_teacher(tmp_path_factory):
    """A small BERT classifier fine-tuned (from scratch, briefly) on the shipped SST-2 sample."""
    from bert_setup import finetune_config

    workdir = str(tmp_path_factory.mktemp("sst2_teacher"))
    trainer.train(finetune_config(**{"train.steps": 20}), workdir)
    return workdir


@pytest.mark.slow  # 25-40 s on 2 cores: the default suite stays under 15 minutes
def test_a_bert_classifier_distils_into_a_smaller_one(classifier_teacher, tmp_path):
    """Classification uses the same step: a student equal to its teacher has loss 0 at alpha=1;
    a smaller student trains and reports both terms; a causal-LM teacher is refused."""
    from bert_setup import finetune_config

    tokenizer = os.path.join(classifier_teacher, "tokenizer.model")
    same = finetune_config(**{"train.steps": 4, "tokenizer.path": tokenizer, "distill.alpha": 1.0,
                              "distill.teacher_workdir": classifier_teacher, "model.dropout_rate": 0.0})
    run = assembly.build(same)
    teacher = pretrained.load(classifier_teacher)
    state = run.init_fn().replace(params=teacher.params)
    _, metrics = run.train_step(state, next(run.task.pipeline.train_iterator(run.data)))
    assert abs(float(metrics["loss"])) < 1e-5 and float(metrics["grad_norm"]) < 1e-4 and float(metrics["ce"]) > 0.1

    student = finetune_config(**{"train.steps": 20, "tokenizer.path": tokenizer, "model.embed_dim": 32,
                                 "model.mlp_dim": 64, "distill.teacher_workdir": classifier_teacher})
    final = trainer.train(student, str(tmp_path / "student"))
    records = [json.loads(line) for line in open(tmp_path / "student" / "metrics.jsonl")]
    assert any("train/kl" in r and np.isfinite(r["train/kl"]) for r in records) and "eval/f1" in final

    with pytest.raises(config_lib.ConfigError, match="classes"):
        assembly.build(dataclasses.replace(student, distill=dataclasses.replace(
            student.distill, teacher_workdir=_lm_teacher(tmp_path, tokenizer))))


def _lm_teacher(tmp_path, tokenizer):
    """A causal LM workdir with the classifier's tokenizer: right vocabulary, wrong kind of teacher."""
    workdir = str(tmp_path / "lm_teacher")
    trainer.train(small_config(**{"train.steps": 2, "eval.every_steps": 2, "checkpoint.every_steps": 2,
                                  "tokenizer.path": tokenizer}), workdir)
    return workdir
