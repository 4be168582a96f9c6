"""The fast paths of the train step compute what the reference paths compute.

Each fast path (causal key-block skipping with the softmax normalised after the value matmul,
jax.nn.dot_product_attention, the fused loss, the GELU and the norms with a recomputed backward) is compared with a reference written the plain
way, on logits and gradients, with packed documents and padding in the batch."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import layers, losses, models
from lm.config import ConfigError, ModelConfig, from_config_dict
from configs import base

TINY = ModelConfig(vocab_size=97, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, max_len=64)


def reference_attention(q, k, v, mask, bias=None):
    """softmax(q k^T / sqrt(E) + bias) v with the mask, the textbook way."""
    scores = jnp.einsum("BHLE,BHSE->BHLS", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        scores += bias
    return jnp.einsum("BHLS,BHSE->BHLE", jax.nn.softmax(jnp.where(mask, scores, layers.NEG_INF), axis=-1), v)


def packed_batch(batch=2, length=32):
    """Two documents in row 0; one document then padding (segment 0) in row 1."""
    segments = np.ones((batch, length), np.int32)
    segments[0, length // 3:] = 2
    segments[1, length - 5:] = 0
    positions = np.concatenate([np.arange(length // 3), np.arange(length - length // 3)])[None].repeat(batch, 0)
    tokens = np.random.default_rng(0).integers(0, TINY.vocab_size, (batch, length), dtype=np.int32)
    return jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments)


@pytest.mark.parametrize("causal_block", [8, 16])
def test_causal_blocks_equal_dense_attention(causal_block):
    _, _, segments = packed_batch()
    q, k, v = (jax.random.normal(key, (2, 4, 32, 8)) for key in jax.random.split(jax.random.PRNGKey(0), 3))
    mask = layers.attention_mask(segments, segments, causal=True)
    real = (segments != 0)[:, None, :, None]  # padding queries' rows are read by nothing

    def loss(fn, q, k, v):
        return jnp.sum(jnp.where(real, fn(q, k, v, mask), 0.0) * jnp.arange(8.0))

    fast = lambda q, k, v, m: layers.dot_product_attention(q, k, v, m, causal_block=causal_block)  # noqa: E731
    np.testing.assert_allclose(jnp.where(real, fast(q, k, v, mask), 0), jnp.where(real, reference_attention(q, k, v, mask), 0),
                               atol=1e-5, rtol=1e-5)
    for got, want in zip(jax.grad(loss, (1, 2, 3))(fast, q, k, v), jax.grad(loss, (1, 2, 3))(reference_attention, q, k, v)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_dense_attention_with_bias_equals_reference():
    """The non-causal path (BERT, T5's encoder and cross-attention, with T5's position bias)."""
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    q, k, v = (jax.random.normal(key, (2, 4, 16, 8)) for key in keys[:3])
    bias = jax.random.normal(keys[3], (1, 4, 16, 16))
    _, _, segments = packed_batch(length=16)
    mask = layers.attention_mask(segments, segments, causal=False)
    np.testing.assert_allclose(layers.dot_product_attention(q, k, v, mask, bias), reference_attention(q, k, v, mask, bias),
                               atol=1e-5, rtol=1e-5)


def model_logits_and_grads(config: ModelConfig):
    tokens, positions, segments = packed_batch()
    model = models.build(config)
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]
    weights = (segments != 0).astype(jnp.float32)

    def loss(p):
        logits = model.apply({"params": p}, tokens, positions, segments)
        return losses.cross_entropy(logits, jnp.roll(tokens, -1, axis=1), weights)["loss_sum"], logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return jnp.where(weights[..., None] > 0, logits, 0.0), grads


@pytest.mark.parametrize("fast", [
    dict(attention_impl="einsum", causal_block=8),
    dict(attention_impl="einsum", causal_block=8, num_kv_heads=2, positions="rotary"),
    dict(attention_impl="xla"),
])
def test_model_fast_paths_equal_the_dense_reference(fast):
    """Logits and every parameter's gradient of the GPT model, fast path vs one dense block."""
    reference = dataclasses.replace(TINY, attention_impl="einsum", causal_block=0,
                                    **{k: v for k, v in fast.items() if k in ("num_kv_heads", "positions")})
    got_logits, got_grads = model_logits_and_grads(dataclasses.replace(TINY, **fast))
    want_logits, want_grads = model_logits_and_grads(reference)
    np.testing.assert_allclose(got_logits, want_logits, atol=1e-4, rtol=1e-4)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4), got_grads, want_grads)


def test_attention_impl_without_dropout_is_refused_with_dropout():
    config = base.get_config()
    config.model.attention_impl, config.model.dropout_rate = "xla", 0.1
    with pytest.raises(ConfigError, match="attention_impl"):
        from_config_dict(config)


def test_fused_cross_entropy_equals_logsumexp_and_argmax():
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    logits = 5 * jax.random.normal(keys[0], (3, 7, 50))
    targets = jax.random.randint(keys[1], (3, 7), 0, 50).at[0, :4].set(jnp.argmax(logits[0, :4], -1))
    weights = jnp.ones((3, 7)).at[2, 5:].set(0.0)

    def reference(logits):
        lse = jax.nn.logsumexp(logits, axis=-1)
        nll = lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        return jnp.sum(nll * weights) + 1e-2 * jnp.sum(lse ** 2 * weights)

    def fused(logits):
        sums = losses.cross_entropy(logits, targets, weights, z_loss=1e-2)
        return sums["loss_sum"] + sums["z_loss_sum"]

    np.testing.assert_allclose(fused(logits), reference(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(fused)(logits), jax.grad(reference)(logits), atol=1e-6)
    hits = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
    assert float(hits) >= 4
    assert float(losses.cross_entropy(logits, targets, weights)["correct"]) == float(hits)


@pytest.mark.parametrize("centered", [True, False])  # LayerNorm, RMSNorm
def test_norm_with_recomputed_backward_equals_autodiff_of_the_formula(centered):
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    x = 3.0 * jax.random.normal(keys[0], (2, 5, 16)) + 1.0
    scale, bias = jax.random.normal(keys[1], (16,)), jax.random.normal(keys[2], (16,))
    cotangent = jax.random.normal(keys[3], x.shape)

    def formula(x, scale, bias):
        if centered:
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-5) * scale + bias

    ours, ours_vjp = jax.vjp(lambda *a: layers.normalize(*a, centered, 1e-5), x, scale, bias)
    theirs, theirs_vjp = jax.vjp(formula, x, scale, bias)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    for got, want in zip(ours_vjp(cotangent), theirs_vjp(cotangent)):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_gelu_with_recomputed_slope_equals_autodiff_of_the_formula(dtype, tol):
    x = jnp.linspace(-8.0, 8.0, 4001).astype(dtype)
    cotangent = jnp.cos(jnp.linspace(0.0, 30.0, 4001)).astype(dtype)

    def pulled_back(fn):
        value, vjp = jax.vjp(fn, x)
        return value.astype(jnp.float32), vjp(cotangent)[0].astype(jnp.float32)

    ours, theirs = pulled_back(layers.gelu_tanh), pulled_back(lambda x: jax.nn.gelu(x, approximate=True))
    assert ours[0].dtype == theirs[0].dtype
    np.testing.assert_allclose(ours[0], theirs[0], atol=tol, rtol=tol)
    np.testing.assert_allclose(ours[1], theirs[1], atol=tol, rtol=tol)


@pytest.mark.parametrize("equation,x_shape,w_shape", [
    ("BLD,DHE->BHLE", (2, 5, 8), (8, 2, 4)),  # projections into heads
    ("BHLE,HED->BLD", (2, 2, 5, 4), (2, 4, 8)),  # out of heads
    ("BHLE,BHSE->BHLS", (2, 2, 5, 4), (2, 2, 5, 4)),  # attention scores
])
def test_bfloat16_dot_gradients_equal_autodiff(equation, x_shape, w_shape):
    """The bfloat16 dot's own backward (bfloat16 matmuls, float32 accumulation) gives autodiff's
    gradients, in the operands' dtypes, to bfloat16 precision."""
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(keys[0], x_shape).astype(jnp.bfloat16)
    w = jax.random.normal(keys[1], w_shape)  # a float32 parameter
    probe = jax.random.normal(keys[2], jax.eval_shape(lambda: jnp.einsum(equation, x, w)).shape)

    def fast(x, w):
        return jnp.sum(layers.dot(equation, x, w, jnp.bfloat16, jnp.float32) * probe)

    def plain(x, w):
        return jnp.sum(jnp.einsum(equation, x.astype(jnp.float32), w.astype(jnp.bfloat16).astype(jnp.float32)) * probe)

    got, want = jax.grad(fast, (0, 1))(x, w), jax.grad(plain, (0, 1))(x, w)
    assert got[0].dtype == jnp.bfloat16 and got[1].dtype == jnp.float32
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), rtol=2e-2, atol=2e-2)


def test_bfloat16_model_tracks_float32():
    """The whole GPT in bfloat16 compute (float32 parameters) stays close to float32."""
    f32_logits, f32_grads = model_logits_and_grads(TINY)
    bf16_logits, bf16_grads = model_logits_and_grads(dataclasses.replace(TINY, dtype="bfloat16"))
    np.testing.assert_allclose(bf16_logits, f32_logits, atol=5e-2)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=5e-2 * float(jnp.max(jnp.abs(w))) + 1e-3),
                 bf16_grads, f32_grads)


@pytest.mark.slow  # ~20 s on 2 cores: the default suite stays near 15 minutes
def test_bench_writes_the_figures_the_acceptance_checks_read(tmp_path):
    """tools/bench.py end to end on a small model: the JSON keys other tools read, with sane values."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    small = ["--config.model.num_layers=1", "--config.model.embed_dim=64", "--config.model.num_heads=2",
             "--config.model.mlp_dim=128", "--config.model.vocab_size=512", "--config.tokenizer.vocab_size=512",
             "--config.data.seq_len=64", "--config.model.max_len=64", "--config.train.batch_size=2"]
    subprocess.run([sys.executable, "tools/bench.py", "--config=configs/bench_cpu.py", *small, "--steps=2",
                    "--warmup=1", f"--json={out}"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"})
    figures = json.loads(out.read_text())
    assert 0 < figures["mfu"] < 2 and figures["peak_flops"] > 1e9 and figures["tokens_per_sec"] > 0
    assert len(figures["step_cpu_seconds"]) == 2 and 0 < figures["cpu_mfu"] < 2
    assert figures["flops_per_token"] == 6 * (4 * 64 * 64 + 2 * 64 * 128 + 512 * 64) + 12 * 1 * 64 * 64


_GRADS_SCRIPT = """
import json, sys
from lm import host_devices
host_devices.configure(sys.argv, default=2)
import jax, numpy as np
sys.path.insert(0, "tests")
from test_performance import TINY, model_logits_and_grads
logits, grads = model_logits_and_grads(TINY)
print(json.dumps({"xla_flags": __import__("os").environ["XLA_FLAGS"], "devices": jax.device_count(),
                  "logits": np.asarray(logits).ravel()[:256].tolist(),
                  "grads": [np.asarray(g).ravel()[:64].tolist() for g in jax.tree.leaves(grads)]}))
"""


@pytest.mark.slow  # 25-40 s on 2 cores: the default suite stays under 15 minutes
def test_cpu_elementwise_fusion_switch_computes_the_same_gradients():
    """--cpu_fuse_elementwise changes how XLA:CPU fuses the step, not what it computes: the switch
    reaches XLA_FLAGS (with the host split into devices) and logits and gradients stay equal."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=repo, JAX_PLATFORMS="cpu")

    def run(*args):
        out = subprocess.run([sys.executable, "-c", _GRADS_SCRIPT, *args], cwd=repo, env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    plain, fused = run(), run("--cpu_fuse_elementwise")
    assert "ynn_fusion_type" not in plain["xla_flags"] and "ynn_fusion_type=+eltwise" in fused["xla_flags"]
    assert plain["devices"] == fused["devices"] == 2
    np.testing.assert_allclose(fused["logits"], plain["logits"], atol=1e-5, rtol=1e-5)
    for got, want in zip(fused["grads"], plain["grads"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_dot_without_bfloat16_hardware_multiplies_the_same_products_in_float32(native, monkeypatch):
    """On a CPU without bfloat16 matmul units, `dot` multiplies the bfloat16-rounded operands as
    float32 (faster there); the values and gradients are those of the bfloat16 matmul, and the
    compiled step really runs float32 (or, with the hardware, bfloat16) dots."""
    from lm import hardware, primitives

    equation = "BLD,DF->BLF"
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    x = jax.random.normal(keys[0], (2, 8, 32)).astype(jnp.bfloat16)
    w = jax.random.normal(keys[1], (32, 16))
    probe = jax.random.normal(keys[2], (2, 8, 16))

    def loss(x, w):
        return jnp.sum(layers.dot(equation, x, w, jnp.bfloat16, jnp.float32) * probe)

    want = jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)  # this machine's own path
    monkeypatch.setattr(hardware, "cpu_has_bfloat16_matmul", lambda: native)
    assert primitives._products_in_float32(jnp.bfloat16) == (not native)
    step = jax.jit(jax.value_and_grad(loss, (0, 1)))
    hlo = step.lower(x, w).compile().as_text()
    types = dict(re.findall(r"(%[\w.-]+) = (\w+)\[", hlo))  # each value's element type
    dot_operands = [re.search(r" dot\((%[\w.-]+), (%[\w.-]+)\)", line).groups()
                    for line in hlo.splitlines() if " dot(" in line]
    assert len(dot_operands) == 3
    assert {types[name] for pair in dot_operands for name in pair} == ({"bf16"} if native else {"f32"})
    got = step(x, w)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), rtol=1e-2, atol=1e-2)


def test_cpu_info_names_the_cpu_and_its_flags():
    from lm import hardware

    info = hardware.cpu_info()
    assert info["cpu_model"] and isinstance(info["cpu_flags"], list)
    has = hardware.cpu_has_bfloat16_matmul()
    assert has == (not info["cpu_flags"] or bool({"avx512_bf16", "amx_bf16", "bf16"} & set(info["cpu_flags"])))
