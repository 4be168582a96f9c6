"""BERT fine-tuning: partial restore of a real pretraining run into a classifier, fine-tuning
and its metrics, frozen encoders and layer-wise decay, pooling, and what a fine-tuning run
refuses or survives."""

import dataclasses
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import assembly, init_from, models, optimizer, trainer
from lm.data import glue
from lm.tasks import classification

from bert_setup import SST2_SAMPLE, bert_config, finetune_config, metrics_of

pytestmark = pytest.mark.bert


def test_partial_restore_takes_the_encoder_and_keeps_a_fresh_head(bert_pretrained_workdir, tmp_path):
    config = finetune_config(init_from=bert_pretrained_workdir)
    run = assembly.build(config)
    fresh = run.init_fn()
    state = init_from.restore(fresh, config, "encoder", log=lambda message: None)
    found = init_from.source(bert_pretrained_workdir)
    pretrained = init_from.read_params(found, log=lambda message: None)
    assert found.step == 30
    same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), state.params["encoder"],
                        pretrained["encoder"])
    assert all(jax.tree.leaves(same))
    assert np.array_equal(state.params["classifier_kernel"], fresh.params["classifier_kernel"])
    assert not np.array_equal(fresh.params["encoder"]["pooler_kernel"], pretrained["encoder"]["pooler_kernel"])

    # Shrink and perturb reach the encoder too: matrices scaled, vectors as trained, head fresh.
    shrunk_config = finetune_config(init_from=bert_pretrained_workdir, **{"finetune.init_shrink": 0.5})
    shrunk = init_from.restore(fresh, shrunk_config, "encoder", log=lambda message: None)
    np.testing.assert_allclose(shrunk.params["encoder"]["pooler_kernel"], 0.5 * pretrained["encoder"]["pooler_kernel"],
                               rtol=1e-6)
    np.testing.assert_array_equal(shrunk.params["encoder"]["pooler_bias"], pretrained["encoder"]["pooler_bias"])
    assert np.array_equal(shrunk.params["classifier_kernel"], fresh.params["classifier_kernel"])

    wider = dataclasses.replace(run.model_config, embed_dim=32, mlp_dim=64)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(models.build(wider).init(jax.random.PRNGKey(0), *run.task.objective.init_inputs())))
    with pytest.raises(config_lib.ConfigError, match=r"has shape \(64,\) in the checkpoint but \(32,\)"):
        init_from.replace_params(shapes["params"]["encoder"], pretrained["encoder"], "encoder")


def test_fine_tune_from_pretrained_writes_report(bert_pretrained_workdir, tmp_path):
    workdir = str(tmp_path / "sst2")
    final = trainer.train(finetune_config(init_from=bert_pretrained_workdir), workdir)
    assert {"eval/accuracy", "eval/f1", "eval/precision", "eval/recall"} <= set(final)
    with open(os.path.join(workdir, "eval_report.json")) as f:
        report = json.load(f)
    evals = {r["step"]: r["eval/accuracy"] for r in metrics_of(workdir) if "eval/accuracy" in r}
    assert report["best"]["eval/accuracy"] == pytest.approx(max(evals.values()))
    assert evals[report["best_step"]] == max(evals.values()) and report["validation_examples"] == 120
    with open(os.path.join(workdir, "tokenizer.model"), "rb") as ours, \
            open(os.path.join(bert_pretrained_workdir, "tokenizer.model"), "rb") as theirs:
        assert ours.read() == theirs.read(), "fine-tuning reuses the pretraining tokenizer"


@pytest.mark.parametrize("labels", [2, 3])
def test_metrics_match_scikit_learn(labels):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(labels)
    truth, guess = rng.integers(0, labels, 500), rng.integers(0, labels, 500)
    confusion = np.zeros((labels, labels))
    np.add.at(confusion, (truth, guess), 1)
    ours = classification.metrics_from_confusion(confusion)
    average = "binary" if labels == 2 else "macro"
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(truth, guess))
    assert ours["precision"] == pytest.approx(metrics.precision_score(truth, guess, average=average))
    assert ours["recall"] == pytest.approx(metrics.recall_score(truth, guess, average=average))
    assert ours["f1"] == pytest.approx(metrics.f1_score(truth, guess, average=average))


def test_frozen_encoder_and_layer_wise_decay_scale_updates():
    task = classification.Classification(finetune_config(**{"finetune.freeze_encoder": True}))
    model = models.build(dataclasses.replace(task.config.model, vocab_size=100))
    shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), *task.init_inputs())["params"]))
    params = ones = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), shapes)
    tx = optimizer.build(dataclasses.replace(task.config.optimizer, name="sgd", momentum=0.0, warmup_steps=0,
                                             schedule="constant", learning_rate=1.0), 10, task.update_scale)
    updates, _ = tx.update(ones, tx.init(params), params)
    assert float(jnp.abs(updates["encoder"]["layers"]["layer_1"]["mlp"]["wi"]).max()) == 0.0
    assert float(jnp.abs(updates["encoder"]["token_embed"]["embedding"]).max()) == 0.0
    assert float(jnp.abs(updates["classifier_kernel"]).min()) > 0.0
    assert float(jnp.abs(updates["encoder"]["pooler_kernel"]).min()) > 0.0

    decay = classification.Classification(finetune_config(**{"finetune.layer_lr_decay": 0.5}))
    factor = lambda *names: decay.update_scale([jax.tree_util.DictKey(n) for n in names])  # noqa: E731
    assert factor("classifier_kernel") == 1.0
    assert factor("encoder", "layers", "layer_1", "mlp", "wi") == 0.5  # top of 2 layers
    assert factor("encoder", "layers", "layer_0", "mlp", "wi") == 0.25
    assert factor("encoder", "token_embed", "embedding") == 0.125
    assert factor("encoder", "pooler_kernel") == 1.0 and factor("encoder", "final_norm", "scale") == 1.0


def test_glue_by_name_from_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        split = glue.load(config_lib.FinetuneConfig(task="mrpc", tfds_name="glue/mrpc"), "validation")
    assert len(split.first) == len(split.second) == len(split.labels) == 12
    assert set(np.unique(split.labels)) <= {0, 1}


def test_bad_configs_are_refused_before_compiling():
    with pytest.raises(config_lib.ConfigError, match="model.family=bert"):
        bert_config(**{"model.family": "gpt"})
    with pytest.raises(config_lib.ConfigError, match="model.num_classes=2"):
        classification.Classification(finetune_config(**{"model.num_classes": 3}))
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        init_from.source("/nonexistent/workdir")


def test_mean_pooling_ignores_padding():
    cfg = config_lib.ModelConfig(family="bert", vocab_size=50, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                                 max_len=12, num_classes=2, pooling="mean")
    model = models.build(cfg)
    tokens = jnp.asarray([[2, 7, 9, 11, 3, 0, 0, 0]], jnp.int32)
    real = (tokens > 0).astype(jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens * 0, real)
    apply = jax.jit(model.apply)
    padded = apply(params, tokens, tokens * 0, real)
    trimmed = apply(params, tokens[:, :5], tokens[:, :5] * 0, real[:, :5])
    np.testing.assert_allclose(padded, trimmed, atol=1e-5)
    other_padding = apply(params, tokens.at[0, 6].set(30), tokens * 0, real)
    np.testing.assert_allclose(padded, other_padding, atol=1e-6)


def test_fine_tuning_refuses_a_pretraining_run_of_the_other_casing(bert_pretrained_workdir, tmp_path):
    # bert_tiny (and so the fixture's run) is uncased; the refusal comes before any data is read.
    config = finetune_config(init_from=bert_pretrained_workdir, **{"data.lowercase": False})
    with pytest.raises(config_lib.ConfigError, match="data.lowercase=True, this run has False"):
        init_from.check(config)
    with pytest.raises(config_lib.ConfigError, match="model.family=bert run, this run is gpt"):
        init_from.check(dataclasses.replace(config, model=dataclasses.replace(config.model, family="gpt")))
    with pytest.raises(config_lib.ConfigError, match="data.lowercase=True"):
        trainer.train(config, str(tmp_path / "cased"))
    assert not os.path.exists(tmp_path / "cased" / "tokenizer.model"), "refused before preparing any data"


def test_fine_tuning_resumes_after_its_pretraining_workdir_is_gone(bert_pretrained_workdir, tmp_path):
    """A workdir is self-contained: on resume it reads its own tokenizer copy and checkpoints."""
    source = tmp_path / "pretrained_copy"
    shutil.copytree(bert_pretrained_workdir, source)
    workdir = str(tmp_path / "sst2")
    trainer.train(finetune_config(init_from=str(source), **{"train.steps": 10}), workdir)
    shutil.rmtree(source)
    final = trainer.train(finetune_config(init_from=str(source), **{"train.steps": 20}), workdir)
    assert "eval/accuracy" in final
    assert max(r["step"] for r in metrics_of(workdir)) == 20


def test_from_scratch_tokenizers_are_cached_by_their_text(tmp_path):
    """The tokenizer cache key is the training text itself: an uncased run never reuses a cased
    run's tokenizer, and the same text finds the same tokenizer."""
    for name in ("stsa.binary.train", "stsa.binary.dev"):  # the shipped sample is lowercase: give it capitals
        lines = (SST2_SAMPLE / name).read_text().splitlines()
        (tmp_path / name).write_text("".join(f"{line[:2]}{line[2:].capitalize()}\n" for line in lines))

    def tokenizer(lowercase):
        config = finetune_config(**{"data.lowercase": lowercase, "finetune.data_dir": str(tmp_path),
                                    "data.cache_dir": str(tmp_path / "cache")})
        return classification.ClassificationPipeline(config).prepare().tokenizer

    cased, uncased = tokenizer(False), tokenizer(True)
    assert cased.fingerprint != uncased.fingerprint
    assert tokenizer(True).fingerprint == uncased.fingerprint
    assert len(os.listdir(tmp_path / "cache" / "tokenizers")) == 2
