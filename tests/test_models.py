"""Layers and the GPT model: masks, packing isolation, rotary, GQA, parameter counts, scan/remat."""

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import layers, models

TINY = config_lib.ModelConfig(vocab_size=97, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, max_len=32)


def init(cfg, length=16):
    model = models.build(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))["params"])
    return model, params


def test_attention_mask_is_causal_within_segments_and_ignores_padding():
    segments = jnp.array([[1, 1, 2, 2, 0]])
    mask = np.asarray(layers.attention_mask(segments, segments, causal=True))[0, 0]
    expected = np.array([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ], bool)
    np.testing.assert_array_equal(mask, expected)
    bidirectional = np.asarray(layers.attention_mask(segments, segments, causal=False))[0, 0]
    np.testing.assert_array_equal(bidirectional[2], [0, 0, 1, 1, 0])


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_packed_documents_do_not_see_each_other(positions):
    """Logits of two documents packed in one row equal the logits of each document alone."""
    cfg = dataclasses.replace(TINY, positions=positions)
    model, params = init(cfg)
    rng = np.random.default_rng(0)
    doc_a, doc_b = rng.integers(4, 97, 6), rng.integers(4, 97, 9)
    packed = jnp.asarray(np.concatenate([doc_a, doc_b]))[None]
    segment_ids = jnp.asarray([1] * 6 + [2] * 9)[None]
    position_ids = jnp.asarray(list(range(6)) + list(range(9)))[None]
    logits_packed = model.apply({"params": params}, packed, position_ids, segment_ids)
    logits_a = model.apply({"params": params}, jnp.asarray(doc_a)[None])
    logits_b = model.apply({"params": params}, jnp.asarray(doc_b)[None])
    np.testing.assert_allclose(logits_packed[0, :6], logits_a[0], atol=1e-5)
    np.testing.assert_allclose(logits_packed[0, 6:], logits_b[0], atol=1e-5)


def test_causal_model_ignores_future_tokens():
    model, params = init(TINY)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 97, (1, 12)))
    changed = tokens.at[0, 8:].set(5)
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, changed)
    np.testing.assert_allclose(a[0, :8], b[0, :8], atol=1e-6)
    assert not np.allclose(a[0, 8:], b[0, 8:])


def test_rotary_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)

    def score(pq, pk):
        rq = layers.rotary(q, jnp.array([[pq]]), 10000.0)
        rk = layers.rotary(k, jnp.array([[pk]]), 10000.0)
        return float(jnp.sum(rq * rk))

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_grouped_query_attention_with_repeated_kv_heads_equals_multi_head():
    """GQA with 2 KV heads equals MHA whose 4 K/V heads repeat those 2, in the same group order."""
    gqa_cfg = dataclasses.replace(TINY, num_kv_heads=2)
    gqa, gqa_params = init(gqa_cfg)
    mha, mha_params = init(TINY)
    for layer in ("layer_0", "layer_1"):
        src = gqa_params["decoder"][layer]["self_attention"]
        dst = dict(mha_params["decoder"][layer]["self_attention"])
        for name in ("key", "value"):
            dst[name] = jnp.repeat(src[name], 2, axis=1)
            dst[name + "_bias"] = jnp.repeat(src[name + "_bias"], 2, axis=0)
        for name in ("query", "query_bias", "out", "out_bias"):
            dst[name] = src[name]
        mha_params["decoder"][layer]["self_attention"] = dst
        for other in ("attention_norm", "mlp_norm", "mlp"):
            mha_params["decoder"][layer][other] = gqa_params["decoder"][layer][other]
    for other in ("token_embed", "position_embed", "final_norm"):
        mha_params[other] = gqa_params[other]
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 97, (2, 10)))
    np.testing.assert_allclose(gqa.apply({"params": gqa_params}, tokens),
                               mha.apply({"params": mha_params}, tokens), atol=1e-5)


@pytest.mark.parametrize("name,expected", [
    ("gpt2_small", 124_439_808),  # GPT-2 small as published (tied embeddings, 1024 positions)
    ("llama_1b", 1_235_814_400),  # Llama-3.2-1B
    ("llama_7b", 6_738_415_616),  # Llama-2-7B
])
def test_named_configs_have_their_published_parameter_counts(name, expected):
    cfg = config_lib.from_config_dict(importlib.import_module(f"configs.{name}").get_config()).model
    model = models.build(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected


def test_gpt_tiny_parameter_count():
    cfg = dataclasses.replace(config_lib.from_config_dict(
        importlib.import_module("configs.gpt_tiny").get_config()).model, vocab_size=1024)
    _, params = init(cfg)
    # embeddings 1024*128 + positions 128*128 + 4 blocks * (attention 4*128*128 + 4*128 biases
    # + MLP 2*128*512 + 512 + 128 biases + 2 LayerNorms * 256) + final LayerNorm 256
    per_block = 4 * 128 * 128 + 4 * 128 + 2 * 128 * 512 + 512 + 128 + 2 * 256
    assert sum(x.size for x in jax.tree.leaves(params)) == 1024 * 128 + 128 * 128 + 4 * per_block + 256 == 940_800


def _stack_layers(params, num_layers):
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[params["decoder"][f"layer_{i}"] for i in range(num_layers)])
    return {**{k: v for k, v in params.items() if k != "decoder"}, "decoder": {"layers": stacked}}


@pytest.mark.parametrize("remat", ["none", "full", "save_dots"])
def test_scanned_and_rematerialised_layers_match_the_loop(remat):
    cfg = dataclasses.replace(TINY, positions="rotary", norm="rmsnorm", mlp_activation="swiglu", use_bias=False)
    loop_model, params = init(cfg)
    scan_model = models.build(dataclasses.replace(cfg, scan_layers=True, remat=remat))
    scan_params = _stack_layers(params, cfg.num_layers)
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, 97, (2, 16)))

    def loss(model, p):
        return jnp.mean(jax.nn.log_softmax(model.apply({"params": p}, tokens))[..., 0])

    np.testing.assert_allclose(loss(scan_model, scan_params), loss(loop_model, params), rtol=1e-5)
    grads_loop = _stack_layers(jax.grad(lambda p: loss(loop_model, p))(params), cfg.num_layers)
    grads_scan = jax.grad(lambda p: loss(scan_model, p))(scan_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads_scan, grads_loop)


def test_bfloat16_compute_stays_close_to_float32():
    model32, params = init(TINY)
    model16 = models.build(dataclasses.replace(TINY, dtype="bfloat16"))
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 97, (2, 16)))
    out32 = model32.apply({"params": params}, tokens)
    out16 = model16.apply({"params": params}, tokens)
    assert out16.dtype == jnp.float32  # logits always come back in float32
    np.testing.assert_allclose(out16, out32, atol=0.05)
