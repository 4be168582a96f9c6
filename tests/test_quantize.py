"""Int8 weight-only quantization (lm/quantize.py, tools/quantize.py): the per-channel error
bound, what stays float, and a real checkpoint whose int8 copy keeps its perplexity."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm import pretrained, quantize

from conftest import REPO

pytestmark = pytest.mark.quantize


def test_every_weight_is_within_half_a_step_of_its_channel_scale():
    rng = np.random.default_rng(0)
    params = {"block": {"attn": {"query": rng.normal(size=(16, 4, 8)).astype(np.float32),
                                 "out": rng.normal(size=(4, 8, 16)).astype(np.float32)},
                        "mlp": {"wi": rng.normal(size=(16, 32)).astype(np.float32),
                                "bias": rng.normal(size=(32,)).astype(np.float32)},
                        "norm": {"scale": np.ones(16, np.float32)}},
              "token_embed": {"embedding": rng.normal(size=(50, 16)).astype(np.float32)}}
    params["block"]["mlp"]["wi"][:, 3] = 0.0  # an all-zero output channel
    params["block"]["mlp"]["wi"][:, 5] *= 100.0  # one loud channel must not coarsen the others
    q = quantize.quantize(params)
    restored = jax.tree.map(np.asarray, quantize.dequantize(q))

    # One scale per output channel: the axis the matmul keeps.
    assert q["block"]["attn"]["query"]["int8_scale"].shape == (1, 4, 8)
    assert q["block"]["attn"]["out"]["int8_scale"].shape == (1, 1, 16)
    assert q["block"]["mlp"]["wi"]["int8_scale"].shape == (1, 32)
    assert q["token_embed"]["embedding"]["int8_scale"].shape == (50, 1)
    # Vectors stay float, bit for bit.
    np.testing.assert_array_equal(restored["block"]["mlp"]["bias"], params["block"]["mlp"]["bias"])
    np.testing.assert_array_equal(restored["block"]["norm"]["scale"], params["block"]["norm"]["scale"])

    for path in (("block", "attn", "query"), ("block", "attn", "out"), ("block", "mlp", "wi"),
                 ("token_embed", "embedding")):
        node, original, back = q, params, restored
        for key in path:
            node, original, back = node[key], original[key], back[key]
        assert node["int8"].dtype == np.int8
        scale = np.asarray(node["int8_scale"])
        assert np.all(np.abs(back - original) <= scale / 2 + 1e-7)
        assert np.abs(np.asarray(node["int8"])).max() == 127  # the range is used in full
    wi = restored["block"]["mlp"]["wi"]
    assert np.all(wi[:, 3] == 0.0)
    quiet = np.delete(np.arange(32), 5)
    assert np.abs(wi[:, quiet] - params["block"]["mlp"]["wi"][:, quiet]).max() < 0.05


def test_scanned_layers_get_one_scale_per_layer_and_channel():
    w = np.random.default_rng(1).normal(size=(3, 16, 32)).astype(np.float32)  # [layers, D, F]
    w[1] *= 10.0
    q = quantize.quantize({"wi": w})["wi"]
    assert q["int8_scale"].shape == (3, 1, 32)
    assert np.all(np.asarray(q["int8_scale"])[1] > 5 * np.asarray(q["int8_scale"])[0])


def test_int8_checkpoint_keeps_perplexity_at_a_quarter_of_the_bytes(trained_tiny_workdir, tmp_path):
    """The tool, end to end, on a real trained checkpoint: written with orbax, restored, evaluated."""
    out, report = tmp_path / "int8", tmp_path / "report.json"
    result = subprocess.run([sys.executable, "tools/quantize.py", f"--workdir={trained_tiny_workdir}",
                             f"--output={out}", f"--json={report}", "--max_new_tokens=8"],
                            cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(report.read_text())
    assert figures["int8_bytes"] < 0.30 * figures["float_bytes"]
    assert figures["int8_disk_bytes"] < 0.45 * figures["float_disk_bytes"]
    assert abs(figures["perplexity_change"]) < 0.02
    assert figures["float_perplexity"] < 400  # a trained model (uniform over 512 pieces would be 512)
    assert "validation perplexity: float" in result.stdout

    # What was written restores to int8 arrays and dequantizes to within the bound of the float params.
    restored = quantize.restore(str(out))
    float_params = pretrained.load(trained_tiny_workdir).params
    leaves = jax.tree.leaves(restored)
    assert any(np.asarray(x).dtype == np.int8 for x in leaves)
    back = jax.tree.map(np.asarray, quantize.dequantize(restored))
    diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), float_params, back)
    assert max(jax.tree.leaves(diffs)) < 0.05
