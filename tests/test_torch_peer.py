"""The PyTorch peer of tools/bench.py --peer=torch is our GPT in PyTorch: same parameter count,
same init scale and optimizer, so its loss moves like ours on the same batch (a fair race)."""

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

from configs import bench_cpu  # noqa: E402
from diagnostics.peers import torch_gpt  # noqa: E402
from diagnostics import benchmark  # noqa: E402
from lm import assembly, models  # noqa: E402
from lm.config import from_config_dict  # noqa: E402


def small_config(**model):
    config = bench_cpu.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim, m.vocab_size, m.max_len = 2, 64, 4, 256, 512, 64
    for name, value in model.items():
        setattr(m, name, value)
    config.tokenizer.vocab_size, config.data.seq_len, config.train.batch_size = 512, 64, 4
    config.optimizer.warmup_steps, config.optimizer.schedule, config.optimizer.learning_rate = 0, "constant", 3e-3
    return from_config_dict(config)


def our_parameter_count(config) -> int:
    model_config = assembly.resolve_model_config(config.model, config.tokenizer.vocab_size)
    tokens = np.zeros((1, config.data.seq_len), np.int32)
    shapes = jax.eval_shape(lambda: models.build(model_config).init(jax.random.PRNGKey(0), tokens)["params"])
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("model", [{}, {"use_bias": False}, {"norm": "rmsnorm", "use_bias": False}])
def test_peer_has_exactly_our_parameter_count(model):
    config = small_config(**model)
    assert torch_gpt.parameter_count(torch_gpt.build_model(config)) == our_parameter_count(config)


def test_bench_cpu_peer_has_our_parameter_count():
    config = from_config_dict(bench_cpu.get_config())
    assert torch_gpt.parameter_count(torch_gpt.build_model(config)) == our_parameter_count(config)


@pytest.mark.slow  # 70-160 s on the shared 2-core machine
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_peer_loss_tracks_ours_on_the_same_batch(dtype):
    """Six AdamW steps on one batch: both start at ~ln(vocab) (same init scale) and fall alike."""
    config = small_config(dtype=dtype)
    ours = benchmark.train_steps(config, num_steps=6, warmup=0)
    peer = torch_gpt.time_steps(config, "eager", num_steps=6, warmup=0)
    assert abs(peer["losses"][0] - np.log(512)) < 0.05
    assert peer["losses"][-1] < peer["losses"][0] - 0.3  # the batch is being learned ...
    assert abs(peer["losses"][-1] - ours.loss) < 0.05 * ours.loss, (peer["losses"], ours.loss)  # ... at our pace


@pytest.mark.slow  # torch.compile of even a tiny model takes minutes on a busy 2-core machine
def test_bench_with_the_torch_peer_writes_the_keys_the_acceptance_reads(tmp_path):
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
                    "--warmup=1", "--rounds=2", "--peer=torch", f"--json={out}"], cwd=repo, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"})
    figures = json.loads(out.read_text())
    for key in ("tokens_per_sec", "mfu", "peer_tokens_per_sec", "peer_compiled_tokens_per_sec"):
        assert figures[key] > 0, key
    assert len(figures["step_seconds"]) == len(figures["peer_step_seconds"]) == 4  # 2 rounds x 2 steps
    assert figures["cpu_model"] and isinstance(figures["cpu_flags"], list)
