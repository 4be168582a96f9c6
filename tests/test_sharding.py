"""The same train step on 1 device and on 8 simulated devices under four meshes gives the same
numbers, the parameters really are sharded, and a mesh or a shape that does not divide fails
before compiling with both numbers named.

The 8-device runs happen in subprocesses (XLA_FLAGS must be set before jax is imported; this
pytest process stays on one device): `python -m pytest -m multidevice tests/test_sharding.py`.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lm import sharding
from lm.config import ConfigError, MeshConfig

from conftest import REPO

RUNNER = [sys.executable, str(REPO / "tests" / "multidevice_runner.py")]
EIGHT = "--xla_force_host_platform_device_count=8"
MESHES = ["data=8", "fsdp=8", "tensor=8", "data=2,fsdp=2,tensor=2"]
# heads and vocabulary divisible by 8, so tensor=8 splits them (model shrunk like conftest.small_config).
OVERRIDES = {"model.num_heads": 8, "tokenizer.vocab_size": 512}


def device_env(count: int | None) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if count:
        flags.append(f"--xla_force_host_platform_device_count={count}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = str(REPO)
    return env


def run_runner(out, meshes, devices, extra=(), overrides=OVERRIDES):
    command = RUNNER + [f"--out={out}", f"--overrides={json.dumps(overrides)}"] + [f"--mesh={m}" for m in meshes]
    result = subprocess.run(command + list(extra), cwd=REPO, env=device_env(devices), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def load(out, mesh):
    return dict(np.load(os.path.join(out, mesh.replace(",", "_").replace("=", "") + ".npz")))


def assert_same_training(result, reference):
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=2e-5, atol=0)
    params = [k for k in reference if k.startswith("param/")]
    assert params and sorted(params) == sorted(k for k in result if k.startswith("param/"))
    for key in params:
        # The key biases' true gradient is exactly zero (a bias shared by all keys shifts every
        # score of a query equally, and softmax ignores that): Adam normalises float32 rounding
        # noise into updates of up to ~lr per step there, with either sign, on any mesh. They
        # must stay near zero; every other parameter must match closely.
        atol = 1e-4 if "key_bias" in key else 1e-5
        np.testing.assert_allclose(result[key], reference[key], rtol=1e-4, atol=atol, err_msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("meshes")
    run_runner(out / "single", ["data=1"], None)
    run_runner(out / "eight", MESHES, 8)
    return out


# Shard shapes per device (global shapes: embed 64, heads 8 x head_dim 8, mlp 256, vocab 512).
EXPECTED_SHARDS = {
    "data=8": {"['decoder']['layer_0']['mlp']['wi']": (64, 256), "['token_embed']['embedding']": (512, 64),
               "['decoder']['layer_0']['self_attention']['query']": (64, 8, 8)},
    "fsdp=8": {"['decoder']['layer_0']['mlp']['wi']": (8, 256), "['token_embed']['embedding']": (512, 8),
               "['decoder']['layer_0']['self_attention']['query']": (8, 8, 8),
               "['decoder']['layer_1']['mlp']['wo']": (256, 8), "['final_norm']['scale']": (8,)},
    "tensor=8": {"['decoder']['layer_0']['mlp']['wi']": (64, 32), "['token_embed']['embedding']": (64, 64),
                 "['decoder']['layer_0']['self_attention']['query']": (64, 1, 8),
                 "['decoder']['layer_0']['self_attention']['out']": (1, 8, 64),
                 "['decoder']['layer_1']['mlp']['wo']": (32, 64), "['final_norm']['scale']": (64,)},
    "data=2,fsdp=2,tensor=2": {"['decoder']['layer_0']['mlp']['wi']": (32, 128),
                               "['token_embed']['embedding']": (256, 32),
                               "['decoder']['layer_0']['self_attention']['query']": (32, 4, 8),
                               "['decoder']['layer_1']['mlp']['wo']": (128, 32)},
}
# Fraction of all parameter elements one device holds.
EXPECTED_FRACTION = {"data=8": (1.0, 1.0), "fsdp=8": (1 / 8, 0.15), "tensor=8": (0.1, 0.9),
                     "data=2,fsdp=2,tensor=2": (1 / 4, 1 / 2)}


@pytest.mark.multidevice
@pytest.mark.parametrize("mesh", MESHES)
def test_mesh_trains_like_one_device_and_shards_parameters(runs, mesh):
    reference, result = load(runs / "single", "data=1"), load(runs / "eight", mesh)
    sizes = dict(zip(("data", "fsdp", "tensor"), result["mesh"].tolist()))
    assert sizes == {"data": 1, "fsdp": 1, "tensor": 1, **{k: int(v) for k, v in
                                                          (p.split("=") for p in mesh.split(","))}}
    assert len(result["losses"]) == 20 and result["losses"][-1] < result["losses"][0] - 0.5
    assert_same_training(result, reference)
    for name, shape in EXPECTED_SHARDS[mesh].items():
        assert tuple(result[f"shard/{name}"]) == shape, (mesh, name)
    held = sum(math.prod(result[k]) for k in result if k.startswith("shard/"))
    total = sum(result[k].size for k in result if k.startswith("param/"))
    low, high = EXPECTED_FRACTION[mesh]
    assert low - 1e-9 <= held / total <= high + 1e-9, (mesh, held / total)


TRAIN = [sys.executable, str(REPO / "tools" / "train.py"), "--config=configs/gpt_tiny.py",
         "--config.model.num_layers=1", "--config.model.embed_dim=64", "--config.model.mlp_dim=256",
         "--config.model.max_len=64", "--config.data.seq_len=64", "--config.tokenizer.vocab_size=512",
         "--config.train.batch_size=8", "--config.train.steps=2"]


@pytest.mark.multidevice
@pytest.mark.parametrize("flags,numbers", [
    (["--config.mesh.data=3"], ["3 devices", "8 are present"]),
    (["--config.mesh.data=-1", "--config.mesh.tensor=3"], ["fix 3", "8 devices"]),
    (["--config.mesh.data=1", "--config.mesh.tensor=8", "--config.model.num_heads=4"],
     ["dimension of 4", "size 8"]),
    (["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.model.embed_dim=36",
      "--config.model.num_heads=4"], ["dimension of 36", "size 8"]),
    (["--config.mesh.data=8", "--config.train.batch_size=12"], ["12", "8 data-parallel devices"]),
])
def test_mesh_mistakes_fail_before_compiling_naming_both_numbers(flags, numbers, tmp_path):
    result = subprocess.run(TRAIN + flags + [f"--workdir={tmp_path}"], cwd=REPO, env=device_env(8),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for number in numbers:
        assert number in result.stderr, result.stderr[-2000:]
    assert "first step compiled" not in result.stdout


def test_mesh_shape_resolves_the_rest_and_refuses_what_does_not_divide():
    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
    assert sharding.mesh_shape(MeshConfig(data=1, fsdp=-1, tensor=1), 8) == (1, 8, 1)
    with pytest.raises(ConfigError, match="has 6 devices but 8 are present"):
        sharding.mesh_shape(MeshConfig(data=3, fsdp=2, tensor=1), 8)
    with pytest.raises(ConfigError, match="fix 3 devices, which does not divide the 8 devices"):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3, tensor=1), 8)


# ---- planning: tools/plan.py and lm/planning.py ----

def _model(config_module, **changes):
    import dataclasses
    import importlib

    from lm import config as config_lib

    config = config_lib.from_config_dict(importlib.import_module(f"configs.{config_module}").get_config())
    return dataclasses.replace(config.model, **changes)


def test_flops_per_token_counts_every_matmul_weight_and_attention():
    from lm import planning

    llama = _model("llama_7b")
    # 6,738,415,616 parameters minus the embedding lookup (32000 x 4096) and the RMSNorm scales.
    assert planning.matmul_params(llama) == 6_738_415_616 - 32000 * 4096 - (2 * 32 + 1) * 4096
    assert planning.flops_per_token(llama, 4096) == 6 * planning.matmul_params(llama) + 12 * 32 * 4096 * 4096
    tied = _model("gpt_tiny", vocab_size=1024, num_layers=4, embed_dim=256, num_heads=4, mlp_dim=1024)
    # the tied output projection is a matmul too
    assert planning.matmul_params(tied) == 4 * (4 * 256 * 256 + 2 * 256 * 1024) + 256 * 1024


@pytest.mark.slow  # compiles and runs gpt_tiny steps: ~1 min on 2 cores
def test_plan_memory_is_within_a_quarter_of_the_measured_peak_on_this_cpu():
    """The compiled program's memory analysis against the resident memory really used by
    training steps on this machine (one device)."""
    import dataclasses

    from lm import planning
    from lm import config as config_lib
    from configs import gpt_tiny

    base = gpt_tiny.get_config()  # shapes fixed here: big enough that the state, not the runtime, dominates
    base.model.num_layers, base.model.embed_dim, base.model.num_heads, base.model.mlp_dim = 4, 256, 4, 1024
    base.model.vocab_size, base.data.seq_len, base.model.max_len, base.train.batch_size = 1024, 128, 128, 32
    config = config_lib.from_config_dict(base)
    config = dataclasses.replace(config, mesh=MeshConfig(data=1, fsdp=1, tensor=1))
    plan = planning.plan(config, planning.hardware("cpu"))
    measured = planning.measure_steps(config, 3)
    assert plan.params_bytes == 4 * plan.num_params and plan.optimizer_bytes >= 2 * plan.params_bytes
    assert abs(plan.peak_bytes / measured["peak_bytes"] - 1) < 0.25, (plan.peak_bytes, measured)


@pytest.mark.multidevice
@pytest.mark.slow  # ~20 s on 2 cores: the default suite stays near 15 minutes
def test_plan_cli_reports_memory_per_device_and_whether_it_fits(tmp_path):
    """A 7B-shaped model shrunk in depth (2 layers) on 8 simulated devices: the real train step
    compiles against abstract shapes, the parameter share per device is 1/8 of the whole."""
    command = [sys.executable, str(REPO / "tools" / "plan.py"), "--config=configs/llama_7b.py", "--devices=8",
               "--hardware=h100", "--mesh=fsdp=8", "--config.model.num_layers=2", "--config.data.seq_len=512",
               "--config.train.batch_size=8", f"--json={tmp_path / 'plan.json'}"]
    result = subprocess.run(command, cwd=REPO, env=device_env(None), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "memory per device (GiB" in result.stdout and "FITS" in result.stdout, result.stdout
    figures = json.load(open(tmp_path / "plan.json"))
    assert figures["num_devices"] == 8 and figures["mesh_shape"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert figures["params_bytes"] == pytest.approx(4 * figures["num_params"] / 8, rel=0.01)
    assert figures["fits"] and 0 < figures["mfu"] <= 1
    too_big = subprocess.run(command[:-1] + ["--hardware=tpu-v5e", "--config.train.batch_size=512"], cwd=REPO,
                             env=device_env(None), capture_output=True, text=True, timeout=600)
    assert too_big.returncode == 0 and "DOES NOT FIT" in too_big.stdout, too_big.stdout + too_big.stderr[-2000:]
