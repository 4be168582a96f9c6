"""The modern small-GPT techniques (docs/speedrun.md), each against its definition: QK-norm,
ReLU squared, zero-initialised output projections, logit soft-capping, U-net skips, the
warmup-stable-decay schedule and Muon. (tests/test_config_schema.py checks for every family field,
the GPT-only ones included, that another family refuses it.)"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from conftest import small_config

from lm import config as config_lib
from lm import layers, metrics, models, optimizer, trainer
from lm import muon as muon_lib

TINY = config_lib.ModelConfig(vocab_size=97, num_layers=4, embed_dim=32, num_heads=4, mlp_dim=64, max_len=32,
                              positions="rotary")
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 12)))


def init(cfg):
    model = models.build(cfg)
    return model, nn.meta.unbox(model.init(jax.random.PRNGKey(0), TOKENS)["params"])


def scale_leaves(params, names, factor):
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p * factor if str(path[-1].key) in names else p, params)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    for qk_norm in (True, False):
        model, params = init(dataclasses.replace(TINY, qk_norm=qk_norm, norm_eps=1e-12))  # eps would blur it
        scaled = scale_leaves(params, ("query", "key"), 10.0)
        same = np.allclose(model.apply({"params": params}, TOKENS), model.apply({"params": scaled}, TOKENS),
                           atol=1e-4)
        assert same == qk_norm
    assert "query_norm" in params["decoder"]["layer_0"]["self_attention"] or not qk_norm


def test_relu_squared_mlp_is_relu_of_the_hidden_layer_squared():
    cfg = dataclasses.replace(TINY, mlp_activation="relu_squared", use_bias=False)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 32)), jnp.float32)
    mlp = layers.Mlp(cfg)
    params = nn.meta.unbox(mlp.init(jax.random.PRNGKey(0), x)["params"])
    expected = np.maximum(np.asarray(x) @ np.asarray(params["wi"]), 0.0) ** 2 @ np.asarray(params["wo"])
    np.testing.assert_allclose(mlp.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


def test_zero_initialised_outputs_make_every_block_the_identity_at_init():
    """Tied: logits at a position then depend on that token alone; untied: the head is zero too."""
    model, params = init(dataclasses.replace(TINY, zero_init_outputs=True))
    changed = TOKENS.at[:, :6].set(3)
    logits, logits_changed = model.apply({"params": params}, TOKENS), model.apply({"params": params}, changed)
    np.testing.assert_allclose(logits[:, 6:], logits_changed[:, 6:], atol=1e-6)
    assert np.all(np.asarray(params["decoder"]["layer_1"]["mlp"]["wo"]) == 0)
    model, params = init(dataclasses.replace(TINY, zero_init_outputs=True, tie_embeddings=False))
    assert np.all(np.asarray(model.apply({"params": params}, TOKENS)) == 0)
    _, default = init(TINY)
    assert np.any(np.asarray(default["decoder"]["layer_1"]["mlp"]["wo"]) != 0)


def test_logit_softcap_is_cap_times_tanh_of_the_raw_logits():
    model, params = init(TINY)
    params = scale_leaves(params, ("embedding",), 300.0)  # tied head: large logits, so the cap bites
    raw = np.asarray(model.apply({"params": params}, TOKENS))
    capped = models.build(dataclasses.replace(TINY, logit_softcap=15.0)).apply({"params": params}, TOKENS)
    np.testing.assert_allclose(capped, 15.0 * np.tanh(raw / 15.0), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(capped)).max() <= 15.0 < np.abs(raw).max()


def test_unet_skips_add_the_mirror_blocks_outputs_with_learned_weights():
    """With the skip weights at zero the model is the plain stack with the same blocks; at their
    initial value of 1 it is not."""
    cfg = dataclasses.replace(TINY, unet_skips=True)
    model, params = init(cfg)
    assert params["decoder"]["skip_weights"].shape == (2,)
    np.testing.assert_array_equal(params["decoder"]["skip_weights"], 1.0)
    plain_params = {**params, "decoder": {k: v for k, v in params["decoder"].items() if k != "skip_weights"}}
    plain = models.build(TINY).apply({"params": plain_params}, TOKENS)
    zeroed = {**params, "decoder": {**params["decoder"], "skip_weights": jnp.zeros(2)}}
    np.testing.assert_allclose(model.apply({"params": zeroed}, TOKENS), plain, atol=1e-5)
    assert not np.allclose(model.apply({"params": params}, TOKENS), plain, atol=1e-3)


def test_unet_skips_with_a_scanned_stack_is_refused():
    with pytest.raises(config_lib.ConfigError, match="scan_layers"):
        config_lib.from_config_dict({"model": {"unet_skips": True, "scan_layers": True}})


def test_warmup_stable_decay_schedule():
    cfg = config_lib.OptimizerConfig(schedule="wsd", learning_rate=1.0, warmup_steps=10, cooldown_fraction=0.25,
                                     end_learning_rate_fraction=0.0)
    lr = optimizer.schedule(cfg, total_steps=110)  # 100 steps after warm-up: 75 stable, 25 of cooldown
    np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10, 50, 85, 97.5, 110)],
                               [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6)


def newton_schulz_reference(g, steps=5):
    """Muon's quintic Newton-Schulz iteration as Keller Jordan defined it (numpy, float64)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (np.linalg.norm(g) + 1e-8)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_orthogonalises_hidden_matrices_and_adam_updates_the_rest():
    """First step from zero momentum: a hidden matrix moves by -lr * sqrt(max(1, fan_out / fan_in))
    * NS(gradient) (attention kernels as the [D, H*E] / [H*E, D] maps they are); embeddings, the
    head and norm scales take Adam's first step, -lr * sign(gradient)."""
    _, params = init(dataclasses.replace(TINY, tie_embeddings=False))
    cfg = config_lib.OptimizerConfig(name="muon", learning_rate=1e-3, muon_learning_rate=0.05, warmup_steps=0,
                                     schedule="constant", weight_decay=0.0, grad_clip_norm=0.0)
    tx = optimizer.build(cfg, total_steps=10)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    layer, grads_layer = updates["decoder"]["layer_0"], grads["decoder"]["layer_0"]

    def check(update, grad, matrix_shape):
        g = np.asarray(grad, np.float64).reshape(matrix_shape)
        width = max(1.0, matrix_shape[1] / matrix_shape[0]) ** 0.5
        np.testing.assert_allclose(np.asarray(update).reshape(matrix_shape),
                                   -0.05 * width * newton_schulz_reference(g), rtol=2e-3, atol=2e-5)

    check(layer["mlp"]["wi"], grads_layer["mlp"]["wi"], (32, 64))
    check(layer["mlp"]["wo"], grads_layer["mlp"]["wo"], (64, 32))
    check(layer["self_attention"]["query"], grads_layer["self_attention"]["query"], (32, 32))
    check(layer["self_attention"]["out"], grads_layer["self_attention"]["out"], (32, 32))
    for adam_update, grad in ((updates["token_embed"]["embedding"], grads["token_embed"]["embedding"]),
                              (updates["output"], grads["output"]),
                              (updates["final_norm"]["scale"], grads["final_norm"]["scale"])):
        np.testing.assert_allclose(adam_update, -1e-3 * np.sign(grad), rtol=1e-4)


@pytest.mark.slow  # ~20 s on 2 cores: the default suite stays near 15 minutes
def test_gpt_speedrun_trains_end_to_end_with_every_switch_on(tmp_path):
    """configs/gpt_speedrun.py, shrunk: Muon's partitioned state gets its shardings, checkpoints and
    evaluates, and the validation loss falls."""
    config = small_config("gpt_speedrun", **{"train.steps": 30, "eval.every_steps": 10, "eval.max_batches": 2})
    assert config.optimizer.name == "muon" and config.model.unet_skips and config.model.qk_norm
    trainer.train(config, str(tmp_path))
    losses = [r["eval/loss"] for r in metrics.read_records(str(tmp_path)) if "eval/loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5


def test_grouped_muon_gives_optax_muons_updates_over_several_steps():
    """lm/muon.py stacks equally shaped matrices (every layer's query/key/value/out, the MLP's)
    into one orthogonalisation per shape: its updates, momentum included, must be optax.contrib's,
    which orthogonalises each matrix on its own, in an unscanned and a scanned stack."""
    for scan in (False, True):
        _, params = init(dataclasses.replace(TINY, scan_layers=scan))
        flat = traverse_util.flatten_dict(params)
        hidden = traverse_util.unflatten_dict({path: x for path, x in flat.items()
                                               if x.ndim >= 2 and path[-1] in ("query", "key", "value", "out", "wi", "wo")})
        dims = optimizer.muon_dimension_numbers
        assert len(jax.tree.leaves(hidden)) == (6 if scan else 24)
        mine, reference = muon_lib.scale_by_grouped_muon(0.95, dims), optax.contrib.scale_by_muon(
            beta=0.95, weight_dimension_numbers=dims)
        state_mine, state_ref = mine.init(hidden), reference.init(hidden)
        for step in range(3):
            grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size + step), p.shape), hidden)
            got, state_mine = jax.jit(mine.update)(grads, state_mine)
            want, state_ref = jax.jit(reference.update)(grads, state_ref)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert jax.tree.structure(state_mine) == jax.tree.structure(state_ref)  # checkpoints interchange


@pytest.mark.slow  # two subprocesses, ~40 s on 2 cores
@pytest.mark.multidevice
def test_muon_split_over_eight_devices_trains_like_one_device(tmp_path):
    """The stacked orthogonalisation is sharded over the data-parallel devices (lm/muon.py): on 8
    simulated devices, data-parallel and mixed meshes train as one device does."""
    import test_sharding  # noqa: PLC0415 (its runner and comparison: one way to check a mesh)

    overrides = {**test_sharding.OVERRIDES, "optimizer.name": "muon", "optimizer.muon_learning_rate": 0.02}
    meshes = ["data=8", "data=2,fsdp=2,tensor=2"]
    test_sharding.run_runner(tmp_path / "single", ["data=1"], None, overrides=overrides)
    test_sharding.run_runner(tmp_path / "eight", meshes, 8, overrides=overrides)
    reference = test_sharding.load(tmp_path / "single", "data=1")
    for mesh in meshes:
        result = test_sharding.load(tmp_path / "eight", mesh)
        assert result["losses"][-1] < result["losses"][0] - 0.5
        test_sharding.assert_same_training(result, reference)
