"""Searching layouts for a run: mesh shapes, microbatches, remat policies and (for a language
model's head) the fused head's chunk, on a target.

`candidates` scores every layout the devices, batch and heads allow with the step-time model
(lm/step_time.py) and a rough memory estimate from shapes; `search` compiles them fastest first
with `planning.plan` until enough fit by the compiled program (tools/plan.py --search).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax

from lm import planning, step_time
from lm.config import Config, ConfigError, MeshConfig
from lm.config_checks import check_loss_chunk
from lm.hardware import GiB, Chip
from lm.planning import HEADROOM, Plan


def memory_estimate(run: step_time.Shapes, mesh: dict, chip: Chip, remat: str, loss_chunk: int = 0) -> float:
    """Rough per-device peak bytes from shapes (the search's screen; compiling decides): float32
    params, AdamW moments and gradients over fsdp x tensor, the gathered weights of two layers,
    what the remat policy keeps per layer and token, one layer's backward working set, and the
    logits (one chunk of them with train.loss_chunk)."""
    m = run.model
    data, fsdp, tensor = mesh["data"], mesh["fsdp"], mesh["tensor"]
    params = step_time._num_params(m)
    itemsize = 2 if m.dtype == "bfloat16" else 4
    state = params / (fsdp * tensor) * 4 * (4 + (run.microbatches > 1))
    layers = m.num_layers + (m.num_decoder_layers or (m.num_layers if m.family == "t5" else 0))
    gathered = 2 * params / max(layers, 1) / tensor * itemsize
    tokens = run.tokens / run.microbatches / (data * fsdp)
    rows = run.batch_size / run.microbatches / (data * fsdp)
    head_dim = m.head_dim or m.embed_dim // m.num_heads
    kv = m.num_kv_heads or m.num_heads
    flash = step_time.attention_kind(m, chip) == "flash"
    heads = m.num_heads / tensor
    scores = 0.0 if flash else rows * heads * run.seq_len ** 2 * 0.5 * 10  # f32 scores, exp, bf16 weights
    projections = (2 * m.num_heads + 2 * kv) * head_dim / tensor + m.embed_dim + 3 * m.mlp_dim / tensor
    kept = {"full": m.embed_dim * itemsize,
            "save_dots": (projections + m.embed_dim) * itemsize,
            "none": (projections + 6 * m.embed_dim + 2 * m.mlp_dim / tensor) * itemsize + scores / max(tokens, 1)}[remat]
    working = tokens * (6 * m.embed_dim + 4 * m.mlp_dim / tensor) * 4 + scores
    logits = tokens * (loss_chunk / run.seq_len if loss_chunk else 1.0) * m.vocab_size / tensor * 4 * 3
    return state + gathered + tokens * layers * kept + working + logits


@dataclasses.dataclass
class Candidate:
    mesh: dict
    microbatches: int
    remat: str
    loss_chunk: int
    time: step_time.StepTime
    tokens_per_second: float
    estimated_peak_bytes: float
    plan: Plan | None = None  # compiled, for the candidates that were confirmed

    def describe(self) -> str:
        mesh = ",".join(f"{k}={v}" for k, v in self.mesh.items())
        peak = (f"peak {self.plan.peak_bytes / GiB:.2f} GiB compiled, {'FITS' if self.plan.fits else 'DOES NOT FIT'}"
                if self.plan else f"~{self.estimated_peak_bytes / GiB:.2f} GiB estimated")
        return (f"--mesh={mesh} --config.train.microbatches={self.microbatches} --config.model.remat={self.remat} "
                f"--config.train.loss_chunk={self.loss_chunk}: "
                f"{self.tokens_per_second:,.0f} tokens/s, MFU {self.time.mfu:.1%}, {peak}")

    def apply(self, config: Config) -> Config:
        """`config` laid out as this candidate says."""
        return dataclasses.replace(
            config, mesh=MeshConfig(**self.mesh), model=dataclasses.replace(config.model, remat=self.remat),
            train=dataclasses.replace(config.train, microbatches=self.microbatches, loss_chunk=self.loss_chunk))


def loss_chunks(config: Config) -> tuple[int, ...]:
    """Whole logits (0) and, where the objective has a language model's head, the fused head and
    loss (train.loss_chunk): the config's own chunk, or the largest divisor of the sequence up to
    half of it and at most 256 positions. The step-time model counts the same FLOPs for both (the
    fused one buys memory), so a default chunk under 16 positions, whose many small matmuls the
    model would not price, is not offered."""
    seq_len, chunk = config.data.seq_len, config.train.loss_chunk
    if not chunk:
        chunk = max(c for c in range(1, min(seq_len // 2, 256) + 1) if seq_len % c == 0) if seq_len > 1 else 0
        if chunk < 16:
            return (0,)
    try:
        check_loss_chunk(dataclasses.replace(config, train=dataclasses.replace(config.train, loss_chunk=chunk)))
    except ConfigError:
        return (0,)
    return (0, chunk)


def candidates(config: Config, chip: Chip, num_devices: int) -> list[Candidate]:
    """Every mesh (data x fsdp x tensor = devices), microbatch count, remat policy and loss chunk
    the batch and the heads divide, scored by predicted tokens/s (fastest first)."""
    m, batch = config.model, config.train.batch_size
    kv = m.num_kv_heads or m.num_heads
    found, chunks = [], loss_chunks(config)
    for tensor in (t for t in (1, 2, 4, 8) if num_devices % t == 0 and kv % t == 0 and m.mlp_dim % t == 0):
        rest = num_devices // tensor
        for fsdp in (f for f in range(1, rest + 1) if rest % f == 0):
            mesh = {"data": rest // fsdp, "fsdp": fsdp, "tensor": tensor}
            for microbatches, remat in itertools.product(range(1, batch + 1), ("none", "save_dots", "full")):
                if batch % microbatches or (batch // microbatches) % rest:
                    continue
                run = dataclasses.replace(planning.shapes(config), microbatches=microbatches)
                predicted = step_time.estimate(run, mesh, chip, remat=remat)  # the same for every chunk
                found += [Candidate(mesh, microbatches, remat, chunk, predicted, run.tokens / predicted.seconds,
                                    memory_estimate(run, mesh, chip, remat, chunk)) for chunk in chunks]
    # Ties (the model often predicts the same speed) go to fewer microbatches, then whole logits:
    # each microbatch gathers the FSDP weights again (hidden under compute by the model) and runs
    # smaller matmuls (not counted by it); the fused head only splits the head's matmuls along
    # the sequence.
    return sorted(found, key=lambda c: (-c.tokens_per_second, c.microbatches, c.loss_chunk))


def search(config: Config, chip: Chip, devices=None, confirm: int = 3, log=None) -> list[Candidate]:
    """The fastest layouts that fit: candidates whose estimated peak is within 1.3 x the usable
    memory are compiled in order of predicted tokens/s until `confirm` of them fit. The fused
    head is tried for a layout only where whole logits did not fit it."""
    devices = list(devices if devices is not None else jax.devices())
    fitting, fitted_layouts = [], set()
    for candidate in candidates(config, chip, len(devices)):
        layout = (tuple(candidate.mesh.items()), candidate.microbatches, candidate.remat)
        if candidate.estimated_peak_bytes > 1.3 * HEADROOM * chip.hbm_bytes or layout in fitted_layouts:
            continue
        candidate.plan = planning.plan(candidate.apply(config), chip, devices)
        if log:
            log(candidate.describe())
        if candidate.plan.fits:
            fitted_layouts.add(layout)
            fitting.append(candidate)
            if len(fitting) == confirm:
                break
    return fitting
