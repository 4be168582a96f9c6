"""train.loss_chunk: the output head and the cross-entropy fused, a chunk of positions at a time
(lm/fused_loss.py). It must give the logits path's sums and gradients on real text, train like
it on one device and on a sharded mesh, and never hold the whole [B, L, V] logits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import assembly, fused_loss, losses, sharding, tasks
from lm.config import ConfigError
from lm.primitives import dot

from conftest import small_config
from test_sharding import assert_same_training, load, run_runner


def _objective_and_grads(objective, model, params, batch):
    def total(p):
        sums = objective.loss_sums(model, p, batch, None, True)
        return (sums["loss_sum"] + sums["z_loss_sum"]) / sums["weight"], sums
    return jax.jit(jax.value_and_grad(total, has_aux=True))(params)


@pytest.mark.parametrize("overrides,tolerance", [
    ({}, 2e-5),  # gpt_tiny's tied head
    ({"model.tie_embeddings": False, "model.logit_softcap": 15.0, "train.z_loss": 1e-3}, 2e-5),
    ({"model.dtype": "bfloat16"}, 2e-2),
])
def test_fused_head_and_loss_give_the_logits_paths_sums_and_gradients(overrides, tolerance):
    config = small_config(**overrides)
    run = assembly.build(config)
    params = run.init_fn().params
    batch = next(run.task.pipeline.train_iterator(run.data, 0, 1))
    batch["weights"][0, 40:] = 0.0  # a padded row: masked positions must drop out of both paths
    fused = tasks.objective(dataclasses.replace(config, train=dataclasses.replace(config.train, loss_chunk=16)))
    (loss, sums), grads = _objective_and_grads(run.task.objective, run.model, params, batch)
    (fused_loss_value, fused_sums), fused_grads = _objective_and_grads(fused, run.model, params, batch)

    assert float(fused_loss_value) == pytest.approx(float(loss), rel=tolerance)
    for key in ("loss_sum", "z_loss_sum", "correct", "weight"):
        assert float(fused_sums[key]) == pytest.approx(float(sums[key]), rel=tolerance, abs=1e-6), key
    assert float(sums["weight"]) == float(batch["weights"].sum()) < batch["weights"].size
    for path, g, fused_g in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(grads),
                                jax.tree.leaves(fused_grads)):
        # A floor for leaves whose true gradient is zero (attention's key bias: rounding noise only).
        scale = max(float(jnp.max(jnp.abs(g))), 1e-4)
        assert float(jnp.max(jnp.abs(fused_g - g))) <= tolerance * scale * 10, jax.tree_util.keystr(path[0])


def test_a_train_step_with_the_fused_loss_follows_the_logits_path():
    config = small_config()
    chunked = dataclasses.replace(config, train=dataclasses.replace(config.train, loss_chunk=32))
    losses_by_run = []
    for cfg in (config, chunked):
        run = assembly.build(cfg)
        state, iterator = run.init_fn(), run.task.pipeline.train_iterator(run.data, 0, 1)
        with sharding.activation_rules(run.mesh):
            history = []
            for _ in range(8):
                state, metrics = run.train_step(state, sharding.to_global(next(iterator), run.mesh))
                history.append(float(metrics["loss"]))
        losses_by_run.append(history)
    plain, fused = losses_by_run
    assert plain[-1] < plain[0] - 0.3  # it trains, so equal histories say something
    np.testing.assert_allclose(fused, plain, rtol=2e-5)


def test_the_fused_loss_holds_one_chunk_of_logits_not_all_of_them():
    """At a 32k vocabulary the logits path's temporaries hold several [B, L, V] float32 arrays
    (64 MiB each here); the fused path holds one chunk's."""
    batch, length, width, vocab = 4, 128, 64, 32768
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    hidden = jax.random.normal(keys[0], (batch, length, width))
    head = jax.random.normal(keys[1], (vocab, width)) * 0.02
    targets = jax.random.randint(keys[2], (batch, length), 0, vocab)
    weights = jnp.ones((batch, length))

    def plain(h, w):
        return losses.cross_entropy(dot("BLD,VD->BLV", h, w, "float32", jnp.float32), targets, weights)["loss_sum"]

    def fused(h, w):
        return fused_loss.fused_cross_entropy(h, w, targets, weights, chunk=16, dtype="float32")["loss_sum"]

    def temp_bytes(f):
        return jax.jit(jax.grad(f, argnums=(0, 1))).lower(hidden, head).compile().memory_analysis().temp_size_in_bytes

    logits_bytes = batch * length * vocab * 4
    assert temp_bytes(plain) >= 2 * logits_bytes
    assert temp_bytes(fused) <= logits_bytes / 2


@pytest.mark.parametrize("overrides,message", [
    ({"train.loss_chunk": 24}, "must divide data.seq_len=64"),
    ({"train.loss_chunk": 16, "model.num_classes": 2, "train.objective": "classification"}, "has no such head"),
    ({"train.loss_chunk": 16, "distill.teacher_workdir": "/tmp/teacher"}, "distillation softens"),
])
def test_a_loss_chunk_that_cannot_apply_is_refused_with_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**overrides)


@pytest.mark.slow
@pytest.mark.multidevice
def test_the_fused_loss_trains_on_a_sharded_mesh_like_the_logits_path_on_one_device(tmp_path):
    """Vocabulary sharded over `tensor`, batch over `data` and `fsdp`: the chunk's max and sums
    run across devices."""
    overrides = {"model.num_heads": 8, "tokenizer.vocab_size": 512}
    run_runner(tmp_path / "single", ["data=1"], None, overrides=overrides)
    run_runner(tmp_path / "eight", ["data=2,fsdp=2,tensor=2"], 8, overrides={**overrides, "train.loss_chunk": 16})
    assert_same_training(load(tmp_path / "eight", "data=2,fsdp=2,tensor=2"), load(tmp_path / "single", "data=1"))
