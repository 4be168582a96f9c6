"""Losses, optimizers and schedules, the train step (accumulation), and checkpoints."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm import checkpoint as checkpoint_lib
from lm import config as config_lib
from lm import losses, models, optimizer, steps
from lm.tasks import causal_lm

OPT = config_lib.OptimizerConfig(learning_rate=1.0, warmup_steps=10, end_learning_rate_fraction=0.1)


def test_cross_entropy_matches_optax_and_masks_padding():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (2, 5)))
    weights = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.float32)
    out = losses.cross_entropy(logits, targets, weights, z_loss=1e-2)
    reference = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    assert float(out["loss_sum"]) == pytest.approx(float(jnp.sum(reference * weights)), rel=1e-6)
    assert float(out["weight"]) == 8
    z = 1e-2 * jnp.sum(jax.nn.logsumexp(logits, -1) ** 2 * weights)
    assert float(out["z_loss_sum"]) == pytest.approx(float(z), rel=1e-6)


@pytest.mark.parametrize("kind,checks", [
    ("constant", {0: 0.0, 5: 0.5, 10: 1.0, 60: 1.0}),
    ("linear", {5: 0.5, 10: 1.0, 55: 0.55, 100: 0.1}),
    ("cosine", {10: 1.0, 55: 0.55, 100: 0.1}),
    ("rsqrt", {10: 1.0, 40: 0.5, 100: (10 / 100) ** 0.5}),  # peak * sqrt(warmup / step)
])
def test_schedule_values(kind, checks):
    schedule = optimizer.schedule(dataclasses.replace(OPT, schedule=kind), total_steps=100)
    for step, expected in checks.items():
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6), (kind, step)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "adafactor", "lion"])
def test_each_optimizer_minimises_a_quadratic(name):
    learning_rate = 0.5 if name == "adagrad" else 0.05  # adagrad's steps shrink as squared gradients add up
    cfg = config_lib.OptimizerConfig(name=name, learning_rate=learning_rate, warmup_steps=0, schedule="constant",
                                     weight_decay=0.0)
    tx = optimizer.build(cfg, total_steps=200)
    params = {"w": jnp.full((4, 4), 3.0)}

    def update(carry, _):
        params, state = carry
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(update, (params, tx.init(params)), length=200)
    assert float(jnp.abs(params["w"]).max()) < 1.0, name


def test_weight_decay_skips_norms_and_biases():
    cfg = config_lib.OptimizerConfig(name="adamw", learning_rate=0.1, warmup_steps=0, schedule="constant",
                                     weight_decay=0.5, grad_clip_norm=0.0)
    tx = optimizer.build(cfg, total_steps=10)
    # By name, not rank: attention biases are [heads, head_dim]; a scanned stack adds a layer axis.
    params = {"kernel": jnp.ones((2, 2)), "scale": jnp.ones((2,)), "bias": jnp.ones((2,)),
              "query_bias": jnp.ones((2, 3)), "layers": {"scale": jnp.ones((4, 2)), "wi": jnp.ones((4, 2, 2))}}
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert float(new["kernel"][0, 0]) == pytest.approx(1 - 0.1 * 0.5)
    assert float(new["layers"]["wi"][0, 0, 0]) == pytest.approx(1 - 0.1 * 0.5)
    for untouched in (new["scale"], new["bias"], new["query_bias"], new["layers"]["scale"]):
        assert float(jnp.abs(untouched - 1.0).max()) == 0.0


MODEL = config_lib.ModelConfig(vocab_size=50, num_layers=2, embed_dim=32, num_heads=2, mlp_dim=64, max_len=16)


def _batch(batch_size=8, length=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, 50, (batch_size, length + 1))
    weights = np.ones((batch_size, length), np.float32)
    weights[0, 10:] = 0  # a padded row, so microbatches carry unequal token counts
    return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
            "positions": jnp.broadcast_to(jnp.arange(length), (batch_size, length)),
            "segment_ids": jnp.ones((batch_size, length), jnp.int32), "weights": jnp.asarray(weights)}


TASK = causal_lm.CausalLM(config_lib.from_config_dict({"data": {"seq_len": 16}}))


def _state(tx):
    model = models.build(MODEL)
    return model, nn.meta.unbox(steps.init_state(model, tx, seed=0, init_inputs=TASK.init_inputs()))


def test_gradient_accumulation_equals_one_big_batch():
    tx = optimizer.build(config_lib.OptimizerConfig(warmup_steps=0, schedule="constant"), 10)
    model, state = _state(tx)
    lr = optimizer.schedule(config_lib.OptimizerConfig(warmup_steps=0, schedule="constant"), 10)
    one = jax.jit(steps.make_train_step(model, TASK, tx, lr, microbatches=1))
    four = jax.jit(steps.make_train_step(model, TASK, tx, lr, microbatches=4))
    batch = _batch()
    state_one, metrics_one = one(state, batch)
    state_four, metrics_four = four(state, batch)
    assert float(metrics_four["loss"]) == pytest.approx(float(metrics_one["loss"]), rel=1e-5)
    assert float(metrics_four["grad_norm"]) == pytest.approx(float(metrics_one["grad_norm"]), rel=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), state_four.params, state_one.params)


def test_z_loss_trains_without_dropout():
    """train.z_loss is a training term: it applies (and is reported) when dropout is off too."""
    cfg = config_lib.OptimizerConfig(warmup_steps=0, schedule="constant")
    tx = optimizer.build(cfg, 10)
    model, state = _state(tx)
    with_z = causal_lm.CausalLM(config_lib.from_config_dict({"data": {"seq_len": 16}, "train": {"z_loss": 1e-2}}))
    step = jax.jit(steps.make_train_step(model, with_z, tx, optimizer.schedule(cfg, 10), dropout=False))
    plain = jax.jit(steps.make_train_step(model, TASK, tx, optimizer.schedule(cfg, 10), dropout=False))
    (z_state, z_metrics), (plain_state, _) = step(state, _batch()), plain(state, _batch())
    assert float(z_metrics["z_loss"]) > 0.0
    assert not np.allclose(z_state.params["token_embed"]["embedding"], plain_state.params["token_embed"]["embedding"])


def test_logged_learning_rate_is_the_one_applied_after_a_skipped_step():
    cfg = config_lib.OptimizerConfig(warmup_steps=10, schedule="constant")
    tx, lr = optimizer.build(cfg, 20), optimizer.schedule(cfg, 20)
    model, state = _state(tx)
    step = jax.jit(steps.make_train_step(model, TASK, tx, lr, inject_nan_at_steps=(2,)))
    logged = []
    for _ in range(3):
        state, metrics = step(state, _batch())
        logged.append((float(metrics["skipped"]), float(metrics["learning_rate"])))
    # step 2 is skipped, so step 3 applies the optimizer's second update, at the schedule's value for count 1
    assert [skipped for skipped, _ in logged] == [0.0, 1.0, 0.0]
    assert [rate for _, rate in logged] == pytest.approx([float(lr(0)), float(lr(1)), float(lr(1))], rel=1e-5)
    assert float(lr(1)) != pytest.approx(float(lr(2)), rel=1e-3)  # the schedule does move: the test can fail


def test_train_step_lowers_the_loss_and_eval_step_agrees():
    cfg = config_lib.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, schedule="constant")
    tx = optimizer.build(cfg, 50)
    model, state = _state(tx)
    train_step = jax.jit(steps.make_train_step(model, TASK, tx, optimizer.schedule(cfg, 50)))
    eval_step = jax.jit(steps.make_eval_step(model, TASK))
    batch = _batch()
    first = None
    for _ in range(30):
        state, metrics = train_step(state, batch)
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < 0.5 * first
    assert int(state.step) == 30
    sums = eval_step(state.params, {**batch, "target_bytes": jnp.ones_like(batch["inputs"])})
    assert float(sums["weight"]) == float(batch["weights"].sum())


def test_checkpoint_round_trip_and_retention(tmp_path):
    tx = optimizer.build(config_lib.OptimizerConfig(), 10)
    model, state = _state(tx)
    cfg = config_lib.CheckpointConfig(keep=2, keep_best=True, async_save=True)
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"), cfg)
    losses_by_step = {10: 3.0, 20: 1.0, 30: 2.0, 40: 2.5}  # step 20 is the best
    for step, loss in losses_by_step.items():
        saved = state.replace(step=jnp.asarray(step, jnp.int32))
        checkpointer.save(step, saved, {"next_index": step}, {"eval/loss": loss})
    checkpointer.wait()
    assert sorted(checkpointer.manager.all_steps()) == [20, 30, 40]  # newest two plus the best
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    restored, data_state = checkpointer.restore(40, abstract)
    assert data_state == {"next_index": 40} and int(restored.step) == 40
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, restored.opt_state, state.opt_state)
    checkpointer.close()


def test_steps_compiled_ahead_leave_nothing_to_compile_and_step_as_the_jitted_ones():
    """lm/assembly.py's CompileAhead: the trainer's launch compiles the train and eval steps on
    threads while the state initialises; their first calls must then find nothing to compile."""
    from conftest import small_config

    from lm import assembly, sharding

    run = assembly.build(small_config())
    pipeline = run.task.pipeline
    batch = sharding.to_global(next(pipeline.train_iterator(run.data)), run.mesh)
    eval_batch = sharding.to_global(next(iter(pipeline.eval_batches(run.data))), run.mesh)
    ahead = assembly.CompileAhead(run, batch, eval_batch)
    state = run.init_fn()  # compiles beside the steps
    train_step = ahead.wait()
    reference_state = jax.tree.map(jnp.copy, state)
    compiles = []

    def on_duration(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        with sharding.activation_rules(run.mesh):
            state, metrics = train_step(state, batch)
            sums = jax.device_get(run.eval_step(state.params, eval_batch))
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
    assert compiles == []
    with sharding.activation_rules(run.mesh):  # the jitted step, called as before CompileAhead existed
        reference_state, reference_metrics = run.train_step(reference_state, batch)
        reference_sums = jax.device_get(run.eval_step(reference_state.params, eval_batch))
    assert int(state.step) == 1 and float(metrics["loss"]) == pytest.approx(float(reference_metrics["loss"]))
    assert jax.tree.map(float, sums) == pytest.approx(jax.tree.map(float, reference_sums))
