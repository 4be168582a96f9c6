"""The peer `tools/bench.py --peer=torch` measures: a minimal PyTorch GPT written to be our GPT
(lm/models/gpt.py) in PyTorch, trained with PyTorch's AdamW, eager and under `torch.compile`.

Same shapes and parameter count (learned positions, pre-norm LayerNorm or RMSNorm, tanh GELU,
biases exactly where `model.use_bias` puts ours, tied output head), the same init scales (0.02,
positions 0.01, residual projections 0.02 / sqrt(2 layers)), the same AdamW (betas, eps, decoupled
weight decay on matrices and embeddings only, global-norm clipping) at the config's peak learning
rate. Attention is `F.scaled_dot_product_attention(is_causal=True)`, what a plain PyTorch GPT
(nanoGPT) uses. When our compute dtype is bfloat16 the peer runs under
`torch.autocast("cpu", bfloat16)`: float32 master weights, bfloat16 matmuls, float32 loss.

It runs in a process of its own (PyTorch's and XLA's thread pools spin-wait after work, so
sharing a process would slow whichever runs second) that stays up between rounds, so
`tools/bench.py` can interleave our steps with the peer's and compile each side only once.
"""

from __future__ import annotations

import math
import multiprocessing
import time

import numpy as np

from diagnostics import benchmark
from lm.config import Config

MODES = ("eager", "compiled")


def check_shapes(config: Config) -> None:
    """Refuse configs this peer would not mirror exactly (it is a GPT with learned positions)."""
    m = config.model
    mismatches = [f"model.{name}={getattr(m, name)!r} (the peer needs {want!r})" for name, want in
                  (("family", "gpt"), ("positions", "learned"), ("tie_embeddings", True), ("dropout_rate", 0.0),
                   ("norm_position", "pre"), ("init", "normal")) if getattr(m, name) != want]
    if m.num_kv_heads not in (0, m.num_heads) or m.head_dim not in (0, m.embed_dim // m.num_heads):
        mismatches.append("grouped-query heads or a custom head_dim (the peer has plain multi-head attention)")
    if m.mlp_activation not in ("gelu", "gelu_exact", "relu"):
        mismatches.append(f"model.mlp_activation={m.mlp_activation!r} (the peer has gelu, gelu_exact or relu)")
    if mismatches:
        raise SystemExit("--peer=torch mirrors our GPT, but " + "; ".join(mismatches))


def build_model(config: Config):
    """Our GPT of `config` in PyTorch: a module whose forward(inputs, targets) returns the mean
    next-token cross-entropy in float32."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    m = config.model
    vocab, width, heads, layers = m.vocab_size or config.tokenizer.vocab_size, m.embed_dim, m.num_heads, m.num_layers
    residual_std = 0.02 / math.sqrt(2 * layers)

    def norm():
        if m.norm == "rmsnorm":
            return nn.RMSNorm(width, eps=m.norm_eps)
        return nn.LayerNorm(width, eps=m.norm_eps, bias=m.use_bias)

    def linear(fan_in, fan_out, std):
        layer = nn.Linear(fan_in, fan_out, bias=m.use_bias)
        nn.init.normal_(layer.weight, std=std)
        if m.use_bias:
            nn.init.zeros_(layer.bias)
        return layer

    activation = {"gelu": lambda x: F.gelu(x, approximate="tanh"), "gelu_exact": F.gelu, "relu": F.relu}[m.mlp_activation]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_norm, self.mlp_norm = norm(), norm()
            self.query, self.key, self.value = (linear(width, width, 0.02) for _ in range(3))
            self.out = linear(width, width, residual_std)
            self.wi, self.wo = linear(width, m.mlp_dim, 0.02), linear(m.mlp_dim, width, residual_std)

        def forward(self, x_BLD):
            batch, length, _ = x_BLD.shape
            h_BLD = self.attention_norm(x_BLD)
            q, k, v = (p(h_BLD).view(batch, length, heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
            attended_BLD = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x_BLD.shape)
            x_BLD = x_BLD + self.out(attended_BLD)
            return x_BLD + self.wo(activation(self.wi(self.mlp_norm(x_BLD))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embed = nn.Embedding(vocab, width)
            self.position_embed = nn.Embedding(m.max_len, width)
            nn.init.normal_(self.token_embed.weight, std=0.02)
            nn.init.normal_(self.position_embed.weight, std=0.01)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.final_norm = norm()

        def forward(self, inputs_BL, targets_BL):
            positions = torch.arange(inputs_BL.shape[1], device=inputs_BL.device)
            x_BLD = self.token_embed(inputs_BL) + self.position_embed(positions)
            for block in self.blocks:
                x_BLD = block(x_BLD)
            logits_BLV = F.linear(self.final_norm(x_BLD), self.token_embed.weight)  # tied head
            return F.cross_entropy(logits_BLV.float().flatten(0, 1), targets_BL.flatten())

    return GPT()


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


class _Trainer:
    """One model, its AdamW and the batch; `step()` runs one training step and returns the loss."""

    def __init__(self, config: Config, compiled: bool):
        import torch

        check_shapes(config)
        torch.manual_seed(config.train.seed)
        self.model = build_model(config).train()
        opt = config.optimizer
        # Decay exactly what lm/optimizer.is_weight decays: matrices and embeddings.
        decayed = [p for p in self.model.parameters() if p.ndim >= 2]
        others = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decayed, "weight_decay": opt.weight_decay}, {"params": others, "weight_decay": 0.0}],
            lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps)
        self.clip = opt.grad_clip_norm
        self.loss_fn = torch.compile(self.model) if compiled else self.model
        self.autocast = config.model.dtype == "bfloat16"
        vocab = config.model.vocab_size or config.tokenizer.vocab_size
        batch = benchmark.random_batch(config, vocab, seed=config.train.seed)
        self.inputs, self.targets = (torch.from_numpy(batch[k].astype(np.int64)) for k in ("inputs", "targets"))

    def step(self) -> float:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.loss_fn(self.inputs, self.targets)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return float(loss.detach())


_TRAINERS: dict[tuple, _Trainer] = {}  # in the peer's process: one per mode and config, built on first use


def time_steps(config: Config, mode: str, num_steps: int, warmup: int = 2) -> dict:
    """Runs in the peer's process: builds (and warms up; for `compiled`, compiles) the mode's
    trainer on first use, then times `num_steps` steps one by one."""
    import torch

    started, setup_seconds, key = time.perf_counter(), 0.0, (mode, config)
    if key not in _TRAINERS:
        _TRAINERS[key] = _Trainer(config, compiled=mode == "compiled")
        for _ in range(warmup):
            _TRAINERS[key].step()
        setup_seconds = time.perf_counter() - started
    trainer = _TRAINERS[key]
    times, cpu_times, losses = [], [], []
    for _ in range(num_steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        losses.append(trainer.step())
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    return {"step_seconds": times, "step_cpu_seconds": cpu_times, "losses": losses, "setup_seconds": setup_seconds,
            "parameters": parameter_count(trainer.model), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


class Peer:
    """The peer's long-lived process. `run_round()` times `steps` steps of every mode in turn;
    `figures()` gives the JSON keys tools/bench.py reports (medians over all rounds)."""

    def __init__(self, config: Config, steps: int, warmup: int = 2, modes=MODES):
        check_shapes(config)
        self.config, self.steps, self.warmup, self.modes = config, steps, warmup, modes
        self.results = {mode: [] for mode in modes}
        self._pool = multiprocessing.get_context("spawn").Pool(1)

    def run_round(self) -> None:
        for mode in self.modes:
            result = self._pool.apply(time_steps, (self.config, mode, self.steps, self.warmup))
            self.results[mode].append(result)
            print(f"peer {mode}: step {np.median(result['step_seconds']):.3f} s "
                  f"(setup {result['setup_seconds']:.1f} s)", flush=True)

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def figures(self) -> dict:
        tokens = self.config.train.batch_size * self.config.data.seq_len
        first = self.results[self.modes[0]][0]
        precision = "autocast bfloat16" if self.config.model.dtype == "bfloat16" else "float32"
        out = {"peer": f"minimal PyTorch GPT (diagnostics/peers/torch_gpt.py), torch {first['torch']} {precision}, "
                       f"AdamW, {first['threads']} threads", "peer_parameters": first["parameters"]}
        for mode in self.modes:
            prefix = "peer" if mode == "eager" else f"peer_{mode}"
            times = [t for result in self.results[mode] for t in result["step_seconds"]]
            cpu_times = [t for result in self.results[mode] for t in result["step_cpu_seconds"]]
            out.update({f"{prefix}_step_seconds": times, f"{prefix}_tokens_per_sec": tokens / float(np.median(times)),
                        f"{prefix}_step_cpu_seconds": cpu_times,
                        f"{prefix}_tokens_per_cpu_sec": tokens / float(np.median(cpu_times)),
                        f"{prefix}_setup_seconds": self.results[mode][0]["setup_seconds"],
                        f"{prefix}_loss": self.results[mode][-1]["losses"][-1]})
        return out
