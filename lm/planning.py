"""Planning a run without the hardware: memory per device from the compiled step, and its speed.

`plan(config, chip)` compiles the real train step (assembly.build_steps: the same model,
optimizer, shardings and jit as training) ahead of time against abstract shapes (no parameter
is allocated) and reads the compiled program's memory and FLOPs; `lm.step_time` predicts the
step time from shapes with an efficiency model fitted to published runs (docs/scale.md).
lm/layout_search.py scores mesh shapes, microbatches, remat policies and the fused head's chunk
with that model and confirms the fastest that should fit with `plan`.

Two corrections make the compiled figures mean what they say:
* XLA's cost analysis counts a while loop's body once: a scanned layer stack (`nn.scan`) and
  the microbatch scan of gradient accumulation. A scanned model is therefore compiled at two
  small depths (2 and 4 layers) and every per-layer figure (FLOPs, memory) is extrapolated
  linearly to the real depth, then FLOPs are multiplied by the microbatches.
* On a GPU target `lm` runs cuDNN flash attention, which this CPU cannot compile. The step is
  compiled with a stand-in that keeps exactly flash attention's residuals (q, k, v, output and
  the float32 log-sum-exp), so the memory is the GPU step's, not the einsum path's [L, L] scores.

To plan for N devices on a machine without them, start a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=N (tools/plan.py does this).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from lm import config_checks
from lm import hardware as hardware_lib
from lm import step_time
from lm.config import Config, ConfigError, ModelConfig
from lm.hardware import GiB, Chip

# Fits means the compiled peak stays under this fraction of HBM: the runtime, allocator
# fragmentation and cuDNN/XLA workspaces take the rest.
HEADROOM = 0.9


def hardware(name: str) -> Chip:
    try:
        return hardware_lib.chip(name)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def matmul_params(m: ModelConfig) -> int:
    """Weights that take part in a matmul: attention q/k/v/out, MLP, and the output projection
    (tied or not); not the embedding lookup, position table, norms or biases."""
    head_dim = m.head_dim or m.embed_dim // m.num_heads
    kv = m.num_kv_heads or m.num_heads
    attention = m.embed_dim * head_dim * (2 * m.num_heads + 2 * kv)
    mlp = m.embed_dim * m.mlp_dim * (3 if m.mlp_activation == "swiglu" else 2)
    return m.num_layers * (attention + mlp) + m.embed_dim * m.vocab_size


def flops_per_token(m: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token of a decoder-only model: 6 x matmul weights + 12 x layers x
    seq_len x width (attention scores and values, forward and backward, no causal discount).
    Rematerialisation is not counted: these are *model* FLOPs, the numerator of MFU."""
    return 6.0 * matmul_params(m) + 12.0 * m.num_layers * seq_len * m.embed_dim


def shapes(config: Config) -> step_time.Shapes:
    """The cost model's view of a run: model, global batch, lengths, microbatches."""
    m = config.model
    if config_checks.encoder_decoder_rows(config):
        encoder, decoder = _lengths(config)
        return step_time.Shapes(m, config.train.batch_size, encoder, config.train.microbatches, target_len=decoder)
    predictions = config.mlm.max_predictions if config.train.objective == "mlm_nsp" else 0
    return step_time.Shapes(m, config.train.batch_size, config.data.seq_len, config.train.microbatches,
                            predictions=predictions)


def _lengths(config: Config) -> tuple[int, int]:
    from lm import tasks

    encoder, decoder = tasks.objective(config).init_inputs()[:2]
    return encoder.shape[1], decoder.shape[1]


def abstract_batch(config: Config, batch_sharding) -> dict:
    """ShapeDtypeStructs of one global train batch, as the task's pipeline produces it."""
    rows, seq = config.train.batch_size, config.data.seq_len
    i32, f32 = jnp.int32, jnp.float32

    def spec(width, dtype=i32):
        shape = (rows,) if width is None else (rows, width)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)

    objective = config.train.objective
    if config_checks.encoder_decoder_rows(config):
        encoder, decoder = _lengths(config)
        batch = {k: spec(encoder) for k in ("encoder_inputs", "encoder_segment_ids", "encoder_positions")}
        batch.update({k: spec(decoder) for k in ("decoder_inputs", "decoder_targets", "decoder_segment_ids",
                                                 "decoder_positions")})
        return {**batch, "decoder_weights": spec(decoder, f32)}
    if objective == "mlm_nsp":
        predictions = config.mlm.max_predictions
        return {"inputs": spec(seq), "type_ids": spec(seq), "segment_ids": spec(seq),
                "mlm_positions": spec(predictions), "mlm_targets": spec(predictions),
                "mlm_weights": spec(predictions, f32), "nsp_labels": spec(None), "nsp_weights": spec(None, f32)}
    if objective == "classification":
        return {"inputs": spec(seq), "type_ids": spec(seq), "segment_ids": spec(seq), "labels": spec(None),
                "weights": spec(None, f32)}
    return {k: spec(seq, f32 if k == "weights" else i32)
            for k in ("inputs", "targets", "positions", "segment_ids", "weights", "target_bytes")}


@jax.custom_vjp
def _flash_stand_in(q_BHLE, k_BHSE, v_BHSE):
    return _flash_forward(q_BHLE, k_BHSE, v_BHSE)[0]


def _flash_forward(q_BHLE, k_BHSE, v_BHSE):
    # Cheap arithmetic of the right shapes: only the residuals matter (flash attention keeps
    # q, k, v, the output and a float32 log-sum-exp per query; never the [L, S] scores).
    out_BHLE = q_BHLE * (jnp.mean(k_BHSE) + jnp.mean(v_BHSE)).astype(q_BHLE.dtype)
    lse_BHL = jnp.sum(q_BHLE.astype(jnp.float32), axis=-1)
    return out_BHLE, (q_BHLE, k_BHSE, v_BHSE, out_BHLE, lse_BHL)


def _flash_backward(residuals, g_BHLE):
    q, k, v, out, lse = residuals
    total = (jnp.sum(g_BHLE.astype(jnp.float32) * out) + jnp.sum(lse)).astype(q.dtype)
    return g_BHLE * total, k * total, v * total


_flash_stand_in.defvjp(_flash_forward, _flash_backward)


@contextlib.contextmanager
def _attention_as_on(chip: Chip, m: ModelConfig):
    """While tracing: attention with the memory of the kernel `lm` runs on `chip`."""
    from lm import layers

    if step_time.attention_kind(m, chip) != "flash":
        yield
        return
    original = layers.dot_product_attention
    layers.dot_product_attention = lambda q, k, v, *rest, **kw: _flash_stand_in(q, k, v)
    try:
        yield
    finally:
        layers.dot_product_attention = original


def _build(config: Config, mesh):
    """The one call into the assembly: model, shardings, abstract state, init and steps."""
    from lm import assembly

    return assembly.build_steps(config, config.model, mesh)


def _shard_bytes(tree) -> int:
    """Bytes of one device's shards of a tree of ShapeDtypeStructs with shardings."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


def _compile(config: Config, chip: Chip, devices) -> dict:
    """Compiles the train step for `config` and returns its per-device figures."""
    from lm import sharding

    mesh = sharding.make_mesh(config.mesh, devices)
    _, _, abstract_state, _, train_step, _ = _build(config, mesh)
    batch = abstract_batch(config, sharding.batch_sharding(mesh))
    with sharding.activation_rules(mesh), _attention_as_on(chip, config.model):
        compiled = train_step.lower(abstract_state, batch).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    argument, output = memory.argument_size_in_bytes, memory.output_size_in_bytes
    alias, temp = memory.alias_size_in_bytes, memory.temp_size_in_bytes
    return {"mesh_shape": dict(mesh.shape), "num_params": sum(math.prod(x.shape)
                                                              for x in jax.tree.leaves(abstract_state.params)),
            "params_bytes": _shard_bytes(abstract_state.params),
            "optimizer_bytes": _shard_bytes(abstract_state.opt_state), "argument_bytes": argument,
            "output_bytes": output, "alias_bytes": alias, "temp_bytes": temp,
            "peak_bytes": argument + output - alias + temp, "flops": float(cost.get("flops", 0.0))}


def _with_depth(config: Config, depth: int) -> Config:
    m = config.model
    return dataclasses.replace(config, model=dataclasses.replace(
        m, num_layers=depth, num_decoder_layers=depth if m.num_decoder_layers else 0))


def compiled_figures(config: Config, chip: Chip, devices) -> tuple[dict, str]:
    """Per-device figures of the compiled step at the config's depth, and how they were had."""
    m = config.model
    scanned = m.scan_layers and m.num_layers > 4 and m.num_decoder_layers in (0, m.num_layers)
    if not scanned:
        figures, how = _compile(config, chip, devices), "compiled at full depth"
    else:
        low, high = _compile(_with_depth(config, 2), chip, devices), _compile(_with_depth(config, 4), chip, devices)
        scale = (m.num_layers - 2) / 2
        figures = {k: (v if k == "mesh_shape" else type(v)(v + scale * (high[k] - v))) for k, v in low.items()}
        # The loop body's FLOPs: an unrolled 2-layer stack counts it twice, the scanned one once.
        unrolled = _compile(_with_depth(dataclasses.replace(config, model=dataclasses.replace(m, scan_layers=False)),
                                        2), chip, devices)
        figures["flops"] = low["flops"] + (m.num_layers - 1) * (unrolled["flops"] - low["flops"])
        how = (f"scanned layers: memory from depths 2 and 4 extrapolated to {m.num_layers}; FLOPs of one layer "
               f"(unrolled 2 minus scanned 2) x {m.num_layers}, as XLA counts a loop body once")
    if config.train.microbatches > 1:
        figures["flops"] *= config.train.microbatches
        how += f"; FLOPs x {config.train.microbatches} microbatches"
    return figures, how


@dataclasses.dataclass
class Plan:
    config: Config
    hardware: Chip
    mesh_shape: dict
    num_devices: int
    num_params: int
    params_bytes: int  # per device
    optimizer_bytes: int  # per device
    argument_bytes: int  # compiled program: inputs (state + batch), per device
    output_bytes: int
    alias_bytes: int  # outputs that reuse donated inputs
    temp_bytes: int  # activations, gradients and scratch, per device
    peak_bytes: int  # argument + output - alias + temp
    model_flops_per_step: float  # global
    compiled_flops_per_device: float  # XLA cost analysis, loops counted in full (see compiled_how)
    analytic_flops_per_device: float  # model FLOPs / devices x recompute (lm.step_time)
    compiled_how: str
    time: step_time.StepTime
    step_seconds: float
    tokens_per_second: float
    mfu: float
    compile_seconds: float

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= HEADROOM * self.hardware.hbm_bytes

    @property
    def activation_bytes(self) -> int:
        return self.temp_bytes

    def summary(self) -> str:
        """One line: FITS or DOES NOT FIT, the peak, and the predicted speed."""
        hw, limit = self.hardware, HEADROOM * self.hardware.hbm_bytes
        verdict = "FITS" if self.fits else "DOES NOT FIT"
        return (f"{verdict}: peak {self.peak_bytes / GiB:.2f} GiB {'<=' if self.fits else '>'} {limit / GiB:.2f} "
                f"GiB usable per {hw.name} | {self.num_devices} x {hw.name} | step {self.step_seconds:.3f}s | "
                f"{self.tokens_per_second:,.0f} tokens/s | MFU {self.mfu * 100:.1f}%")

    def report(self) -> str:
        c, hw, t = self.config, self.hardware, self.time
        tokens = shapes(c).tokens
        mesh = ", ".join(f"{k}={v}" for k, v in self.mesh_shape.items())
        ratio = self.compiled_flops_per_device / self.analytic_flops_per_device if self.analytic_flops_per_device else 0
        attention_note = ("the flash-attention stand-in has no score FLOPs; cuDNN's are in the analytic figure"
                          if t.attention_kind == "flash" else
                          f"the einsum path computes only the causal key blocks (causal_block={c.model.causal_block})"
                          if c.model.family == "gpt" else "einsum attention")
        lines = [
            f"plan: {self.num_params / 1e9:.3f}B parameters | mesh ({mesh}) on {self.num_devices} x {hw.name} | "
            f"batch {c.train.batch_size} ({c.train.microbatches} microbatches) = {tokens:,} tokens/step | "
            f"remat={c.model.remat} scan_layers={c.model.scan_layers} dtype={c.model.dtype} attention={t.attention_kind}",
            "memory per device (GiB, from the compiled program):",
            f"  parameters        {self.params_bytes / GiB:9.2f}",
            f"  optimizer state   {self.optimizer_bytes / GiB:9.2f}",
            f"  activations+temps {self.temp_bytes / GiB:9.2f}   (gradients, activations, scratch)",
            f"  peak              {self.peak_bytes / GiB:9.2f}   of {hw.hbm_bytes / GiB:.2f} GiB HBM on {hw.name} "
            f"({HEADROOM:.0%} usable)",
            f"FLOPs: model {self.model_flops_per_step:.3e} per step; per device: analytic {self.analytic_flops_per_device:.3e}"
            f" (model / {self.num_devices} devices x recompute), compiled {self.compiled_flops_per_device:.3e} "
            f"= {ratio:.2f} x analytic ({self.compiled_how}; {attention_note}; XLA also counts elementwise work "
            f"- norms, rotary, softmax, optimizer - as FLOPs, the analytic figure only matmuls and attention)",
            f"time per step on {hw.name} (efficiency model, lm/step_time.py): matmuls {t.matmul:.3f}s, attention "
            f"{t.attention:.3f}s, elementwise {t.elementwise:.3f}s, optimizer {t.optimizer:.3f}s, collectives "
            f"{t.collectives:.3f}s of which exposed {t.exposed_collectives:.3f}s",
            f"  step time {self.step_seconds:.3f}s | {self.tokens_per_second:,.0f} tokens/s | MFU {self.mfu:.1%}",
            self.summary(),
        ]
        if not self.fits:
            lines.append("  to fit: raise train.microbatches, use model.remat=full, shard more (mesh fsdp/tensor), "
                         "use more devices, or try tools/plan.py --search")
        lines.append(f"(compiled in {self.compile_seconds:.0f}s on {jax.devices()[0].platform})")
        return "\n".join(lines)


def plan(config: Config, hw: Chip, devices=None) -> Plan:
    """Compiles the real train step for `config.mesh` over `devices` (default: all) and
    estimates memory and speed on `hw`. Allocates no parameters."""
    if config.model.vocab_size == 0:
        raise ConfigError("planning needs an explicit model.vocab_size (no tokenizer is loaded)")
    devices = list(devices if devices is not None else jax.devices())
    started = time.time()
    figures, how = compiled_figures(config, hw, devices)
    compile_seconds = time.time() - started
    run = shapes(config)
    predicted = step_time.estimate(run, figures["mesh_shape"], hw)
    n = len(devices)
    return Plan(config, hw, figures["mesh_shape"], n, figures["num_params"], figures["params_bytes"],
                figures["optimizer_bytes"], figures["argument_bytes"], figures["output_bytes"],
                figures["alias_bytes"], figures["temp_bytes"], figures["peak_bytes"], predicted.model_flops,
                figures["flops"], predicted.hardware_flops, how, predicted, predicted.seconds,
                run.tokens / predicted.seconds, predicted.mfu, compile_seconds)


def measure_steps(config: Config, num_steps: int = 5) -> dict:
    """Runs `num_steps` real train steps here on random tokens (after compiling) and returns the
    median step time and the peak memory they added: the process's resident-set high-water
    mark (reset after compiling) minus its size before the state was allocated. The reference
    the CPU predictions are checked against."""
    from lm import sharding

    mesh = sharding.make_mesh(config.mesh)
    _, _, abstract_state, init_fn, train_step, _ = _build(config, mesh)
    shape = (config.train.batch_size, config.data.seq_len)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, (shape[0], shape[1] + 1), dtype=np.int32)
    host_batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                  "positions": np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape).copy(),
                  "segment_ids": np.ones(shape, np.int32), "weights": np.ones(shape, np.float32),
                  "target_bytes": np.ones(shape, np.int32)}
    with sharding.activation_rules(mesh):
        batch_abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding.batch_sharding(mesh))
                          for k, v in host_batch.items()}
        compiled = train_step.lower(abstract_state, batch_abstract).compile()
        init_compiled = init_fn.lower().compile()
        batch = sharding.to_global(host_batch, mesh)
        baseline = hardware_lib.rss_bytes("VmRSS")
        hardware_lib.reset_peak_rss()  # compiling is not training
        state = init_compiled()
        times = []
        for _ in range(num_steps):
            started = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - started)
        peak = hardware_lib.rss_bytes("VmHWM") - baseline
    return {"step_seconds": float(np.median(times)), "step_times": times, "peak_bytes": int(peak),
            "loss": float(metrics["loss"])}
