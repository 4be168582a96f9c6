"""Checks that need a GPU or TPU. On a machine with one: `python -m pytest -m accelerator`
(docs/scale.md). Where JAX sees only the CPU they skip, saying why."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm import assembly, hardware, models, sharding
from lm.config import MeshConfig
from tests.conftest import REPO, small_config

BACKEND = jax.default_backend()
pytestmark = [pytest.mark.accelerator,
              pytest.mark.skipif(BACKEND == "cpu", reason="needs a GPU or TPU; JAX sees only the CPU here "
                                                          "(run `python -m pytest -m accelerator` on a machine with one)")]


def _config(**overrides):
    return small_config(**{"model.dtype": "bfloat16", "model.vocab_size": 512, "model.num_heads": 4,
                           "model.embed_dim": 256, "model.mlp_dim": 1024, "model.max_len": 128,
                           "data.seq_len": 128, **overrides})


def _packed_batch(config, seed: int = 0) -> dict:
    """Random tokens, two documents per row (so the segment mask matters), as the pipeline packs them."""
    batch, length = config.train.batch_size, config.data.seq_len
    tokens = np.random.default_rng(seed).integers(4, config.model.vocab_size, (batch, length + 1), dtype=np.int32)
    half = length // 2
    positions = np.concatenate([np.arange(half), np.arange(length - half)]).astype(np.int32)
    segments = np.concatenate([np.ones(half), np.full(length - half, 2)]).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": np.tile(positions, (batch, 1)),
            "segment_ids": np.tile(segments, (batch, 1)), "weights": np.ones((batch, length), np.float32),
            "target_bytes": np.ones((batch, length), np.int32)}


def test_cudnn_attention_equals_the_einsum_path():
    if BACKEND != "gpu":
        pytest.skip(f"cuDNN attention is for NVIDIA GPUs; this is a {BACKEND}")
    config = _config()
    batch = _packed_batch(config)
    args = (batch["inputs"], batch["positions"], batch["segment_ids"])
    einsum = models.build(dataclasses.replace(config.model, attention_impl="einsum"))
    cudnn = models.build(dataclasses.replace(config.model, attention_impl="cudnn"))
    params = jax.jit(lambda: einsum.init(jax.random.PRNGKey(0), *args)["params"])()

    def loss_and_grads(model):
        def loss(p):
            logits = model.apply({"params": p}, *args).astype(np.float32)
            return -jax.numpy.mean(jax.numpy.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], -1))
        return jax.jit(jax.value_and_grad(loss))(params)

    (loss_e, grads_e), (loss_c, grads_c) = loss_and_grads(einsum), loss_and_grads(cudnn)
    assert float(loss_c) == pytest.approx(float(loss_e), rel=1e-2)
    flat_e, flat_c = (np.concatenate([np.ravel(np.asarray(g, np.float32)) for g in jax.tree.leaves(t)])
                      for t in (grads_e, grads_c))
    cosine = flat_e @ flat_c / np.linalg.norm(flat_e) / np.linalg.norm(flat_c)
    assert cosine > 0.99, cosine


def test_bfloat16_train_step_matches_cpu():
    """Three bfloat16 steps from the same init on the accelerator (its default attention: cuDNN
    on a GPU) and on the host CPU (einsum attention): the losses agree within bf16 tolerance."""
    host_batch = _packed_batch(_config())
    losses = {}
    for name, devices, impl in (("accelerator", jax.devices()[:1], "auto"), ("cpu", jax.devices("cpu")[:1], "einsum")):
        config = _config(**{"model.attention_impl": impl})
        mesh = sharding.make_mesh(MeshConfig(), devices)
        built = assembly.build_steps(config, config.model, mesh)
        with sharding.activation_rules(mesh):
            state, batch = built.init_fn(), sharding.to_global(host_batch, mesh)
            losses[name] = []
            for _ in range(3):
                state, metrics = built.train_step(state, batch)
                losses[name].append(float(metrics["loss"]))
    np.testing.assert_allclose(losses["accelerator"], losses["cpu"], rtol=2e-2)
    assert losses["cpu"][-1] < losses["cpu"][0]  # it trains


def test_bench_reports_mfu_against_the_chips_peak(tmp_path):
    chip = hardware.chip_name()  # an unknown chip fails here, naming the table to extend (lm/hardware.py)
    out = tmp_path / "bench.json"
    env = {**os.environ, "JAX_PLATFORMS": ""}  # tools/bench.py defaults to the CPU
    subprocess.run([sys.executable, "tools/bench.py", "--config=configs/gpt_tiny.py", "--config.model.dtype=bfloat16",
                    "--steps=5", f"--json={out}"], cwd=REPO, env=env, check=True, timeout=900)
    figures = json.loads(out.read_text())
    peak = hardware.peak_flops(chip, "bfloat16") * jax.device_count()
    assert figures["chip"] == chip and figures["peak_flops"] == pytest.approx(peak)
    assert figures["mfu"] == pytest.approx(figures["model_flops_per_sec"] / peak)
    assert 0 < figures["mfu"] < 1
