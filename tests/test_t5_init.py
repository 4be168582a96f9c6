"""T5's own parametrisation (model.init="fan_in", model.scale_decoder_outputs) beside the default."""

import dataclasses

import numpy as np
import pytest

from lm import config as config_lib
from lm.interop import t5 as t5_interop
from tests.test_t5 import TINY, init

pytestmark = pytest.mark.t5

T5_PARAMETRISED = dataclasses.replace(TINY, init="fan_in", scale_decoder_outputs=True)


def _logits(model, params, length=8):
    rng = np.random.default_rng(0)
    inputs = rng.integers(2, TINY.vocab_size, (2, length))
    return np.asarray(model.apply({"params": params}, inputs, inputs))


def test_default_init_is_unchanged():
    _, params = init(TINY)
    assert abs(float(np.std(params["token_embed"]["embedding"])) - 0.02) < 0.002
    assert abs(float(np.std(params["encoder"]["layer_0"]["self_attention"]["query"])) - 0.02) < 0.002
    # GPT-2's depth-scaled residual projections: 0.02 / sqrt(2 x 2 layers)
    assert abs(float(np.std(params["encoder"]["layer_0"]["mlp"]["wo"])) - 0.01) < 0.001


def test_fan_in_init_starts_at_unit_scale_and_logits_at_order_one():
    model, params = init(T5_PARAMETRISED)
    layer = params["encoder"]["layer_0"]
    assert abs(float(np.std(params["token_embed"]["embedding"])) - 1.0) < 0.05
    assert abs(float(np.std(layer["self_attention"]["query"])) - TINY.embed_dim ** -0.5) < 0.02
    assert abs(float(np.std(layer["self_attention"]["out"])) - TINY.embed_dim ** -0.5) < 0.02  # 4 heads x 8 = 32 in
    assert abs(float(np.std(layer["mlp"]["wo"])) - TINY.mlp_dim ** -0.5) < 0.01
    # The point of it: logits start near unit scale, not at 0.02 x sqrt(embed_dim).
    assert 0.5 < float(np.std(_logits(model, params))) < 2.0
    default_model, default_params = init(TINY)
    assert float(np.std(_logits(default_model, default_params))) < 0.3


def test_scale_decoder_outputs_equals_the_factor_folded_into_the_final_norm():
    """What T5 v1.0 does before its tied projection, and what export writes into the final norm."""
    scaled_model, params = init(T5_PARAMETRISED)
    unscaled_model, _ = init(dataclasses.replace(T5_PARAMETRISED, scale_decoder_outputs=False))
    folded = dict(params, decoder_norm={"scale": params["decoder_norm"]["scale"] * TINY.embed_dim ** -0.5})
    np.testing.assert_allclose(_logits(scaled_model, params), _logits(unscaled_model, folded), rtol=1e-4, atol=1e-5)
    hf_config, tensors = t5_interop.export(T5_PARAMETRISED, params)
    assert hf_config["scale_decoder_outputs"] is False
    np.testing.assert_allclose(tensors["decoder.final_layer_norm.weight"], folded["decoder_norm"]["scale"], rtol=1e-6)


def test_config_errors_name_the_fix():
    with pytest.raises(config_lib.ConfigError, match="are T5 options"):
        config_lib.from_config_dict({"model": {"init": "fan_in"}})
    with pytest.raises(config_lib.ConfigError, match="set model.tie_embeddings=true"):
        config_lib.from_config_dict({"model": {"family": "t5", "positions": "relative", "scale_decoder_outputs": True,
                                               "tie_embeddings": False}, "train": {"objective": "seq2seq"}})
    with pytest.raises(config_lib.ConfigError, match="model.init"):
        config_lib.from_config_dict({"model": {"family": "t5", "positions": "relative", "init": "unit"},
                                     "train": {"objective": "seq2seq"}})


def test_attention_probe_tells_uniform_from_peaked_attention():
    """The diagnostic behind docs/t5.md's finding (pretrained encoder attention stays uniform)."""
    import jax

    from diagnostics import attention_probe
    from lm.data import seq2seq as seq2seq_data

    model, params = init(TINY)
    rng = np.random.default_rng(1)
    examples = [(rng.integers(2, TINY.vocab_size, n).astype(np.int32), rng.integers(2, TINY.vocab_size, m)
                 .astype(np.int32)) for n, m in ((5, 4), (7, 3))]
    batch = {k: v[None] for k, v in seq2seq_data.pack_rows(examples, 16, 10, pad_id=0).items()}
    flat = jax.tree_util.tree_flatten_with_path(params)[0]

    def scaled(factor, names=("query", "key")):
        leaves = [x * factor if str(getattr(p[-1], "key", "")) in names else x for p, x in flat]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)

    uniform = attention_probe.probe(model, scaled(0.0, ("query", "embedding")), batch)
    peaked = attention_probe.probe(model, scaled(30.0), batch)
    layers = [n for n in uniform if "layer_" in n and not n.endswith(".uniform")]
    assert len(layers) == 2 + 2 * 2  # encoder self x 2, decoder self and cross x 2
    for name in layers:
        assert abs(uniform[name] - uniform[name + ".uniform"]) < 1e-4, name
        assert peaked[name] < peaked[name + ".uniform"] - 0.2, name
    assert 0.0 <= uniform["accuracy"] <= 1.0 and uniform["nll"] > 0


def test_attention_probe_reads_scanned_and_grouped_query_layers_alike():
    """The probe reads what Attention sowed: a scanned stack gives per-layer entries equal to the
    same params unrolled, with grouped-query heads (2 key/value heads for 4 query heads)."""
    from diagnostics import attention_probe
    from lm.data import seq2seq as seq2seq_data
    from lm.interop import core

    grouped = dataclasses.replace(TINY, num_kv_heads=2)
    scanned_model, scanned_params = init(dataclasses.replace(grouped, scan_layers=True))
    unrolled_model, _ = init(grouped)
    rng = np.random.default_rng(2)
    examples = [(rng.integers(2, TINY.vocab_size, n).astype(np.int32), rng.integers(2, TINY.vocab_size, m)
                 .astype(np.int32)) for n, m in ((6, 4), (5, 5))]
    batch = {k: v[None] for k, v in seq2seq_data.pack_rows(examples, 16, 10, pad_id=0).items()}
    scanned = attention_probe.probe(scanned_model, scanned_params, batch)
    unrolled = attention_probe.probe(unrolled_model, core.unstack_layers(scanned_params), batch)
    assert sorted(scanned) == sorted(unrolled) and "decoder.layer_1.cross" in scanned
    for name, value in unrolled.items():
        assert scanned[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
