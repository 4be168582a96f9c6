"""Planning a run without the hardware: memory per device, FLOPs, and a roofline step time.

`plan(config, hardware, mesh)` compiles the real train step (assembly.build_steps: the same
model, optimizer, shardings and jit as training) ahead of time against abstract shapes
(jax.eval_shape: no parameter is allocated), reads the compiled program's memory analysis,
and combines the model's FLOPs with the hardware's published peak FLOP/s and memory
bandwidth into a roofline estimate of step time, tokens/s and MFU.

To plan for N devices on a machine without them, start a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=N (tools/plan.py does this).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lm.config import Config, ConfigError, ModelConfig

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Hardware:
    name: str
    peak_flops: float  # dense bf16 FLOP/s per device (matmul units)
    peak_flops_fp32: float  # what float32 matmuls run at under jax's default precision
    memory_bandwidth: float  # bytes/s per device (HBM)
    memory_bytes: float  # per device
    interconnect_bandwidth: float  # bytes/s per device for collectives (one direction)
    source: str


# Published datasheet figures (dense, no sparsity). float32 matmuls: TF32 on A100/H100 (jax's
# default precision), one bf16 pass on TPU (jax's default precision there).
HARDWARE = {
    "h100": Hardware("h100", 989e12, 494e12, 3.35e12, 80e9, 450e9, "NVIDIA H100 SXM5 80GB datasheet"),
    "a100": Hardware("a100", 312e12, 156e12, 2.039e12, 80e9, 300e9, "NVIDIA A100 SXM4 80GB datasheet"),
    "tpu-v4": Hardware("tpu-v4", 275e12, 275e12, 1.2e12, 32 * GiB, 4.5e10 * 6, "Cloud TPU v4 docs"),
    "tpu-v5e": Hardware("tpu-v5e", 197e12, 197e12, 8.19e11, 16 * GiB, 4.5e10 * 4, "Cloud TPU v5e docs"),
    "tpu-v5p": Hardware("tpu-v5p", 459e12, 459e12, 2.765e12, 95 * GiB, 1.2e11 * 6, "Cloud TPU v5p docs"),
    # This machine (2 x86-64 cores), measured: jitted 4096^3 matmul, float32 ~175 GFLOP/s,
    # bf16 inputs with float32 accumulation ~300 GFLOP/s; stream copy bandwidth ~10 GB/s.
    # See measure_cpu() and docs/scale.md. Collectives between simulated devices are memory copies.
    "cpu": Hardware("cpu", 300e9, 175e9, 10e9, 8 * GiB, 10e9, "measured on this 2-core CPU (docs/scale.md)"),
}


def hardware(name: str) -> Hardware:
    if name not in HARDWARE:
        raise ConfigError(f"unknown --hardware={name!r}: choose one of {', '.join(HARDWARE)}")
    return HARDWARE[name]


def matmul_params(m: ModelConfig) -> int:
    """Weights that take part in a matmul: attention q/k/v/out, MLP, and the output projection
    (tied or not); not the embedding lookup, position table, norms or biases."""
    head_dim = m.head_dim or m.embed_dim // m.num_heads
    kv = m.num_kv_heads or m.num_heads
    attention = m.embed_dim * head_dim * (2 * m.num_heads + 2 * kv)
    mlp = m.embed_dim * m.mlp_dim * (3 if m.mlp_activation == "swiglu" else 2)
    return m.num_layers * (attention + mlp) + m.embed_dim * m.vocab_size


def flops_per_token(m: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul weights + 12 x layers x seq_len x width (attention
    scores and values, forward and backward, no causal discount). Rematerialisation is not
    counted: these are *model* FLOPs, the numerator of MFU."""
    return 6.0 * matmul_params(m) + 12.0 * m.num_layers * seq_len * m.embed_dim


def measure_cpu(size: int = 2048, repeats: int = 5) -> dict:
    """This machine's matmul peak (float32 and bf16->f32) and copy bandwidth, on one device."""
    import time

    def best(fn, *args):
        fn(*args).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args).block_until_ready()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    a = jnp.ones((size, size), jnp.float32)
    f32 = 2 * size ** 3 / best(jax.jit(lambda x, y: x @ y), a, a)
    b = a.astype(jnp.bfloat16)
    bf16 = 2 * size ** 3 / best(jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32)), b, b)
    big = jnp.ones((64 * 2 ** 20,), jnp.float32)
    copy = 2 * big.nbytes / best(jax.jit(lambda x: x * 1.0001), big)
    return {"float32_flops": f32, "bfloat16_flops": bf16, "copy_bandwidth": copy}


def _shard_bytes(tree) -> int:
    """Bytes of one device's shards of a tree of ShapeDtypeStructs with shardings."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


@dataclasses.dataclass
class Plan:
    config: Config
    hardware: Hardware
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
    compiled_flops_per_device: float  # from the compiled program's cost analysis (includes remat)
    compiled_bytes_accessed_per_device: float
    compute_seconds: float
    memory_seconds: float
    communication_seconds: float
    step_seconds: float  # roofline: compute, memory traffic and collectives fully overlapped
    serial_seconds: float  # no overlap at all: their sum (a pessimistic bound)
    tokens_per_second: float
    mfu: float
    compile_seconds: float

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.hardware.memory_bytes

    @property
    def activation_bytes(self) -> int:
        return self.temp_bytes

    def report(self) -> str:
        c, hw = self.config, self.hardware
        tokens = c.train.batch_size * c.data.seq_len
        mesh = ", ".join(f"{k}={v}" for k, v in self.mesh_shape.items())
        lines = [
            f"plan: {self.num_params / 1e9:.3f}B parameters | mesh ({mesh}) on {self.num_devices} x {hw.name} | "
            f"batch {c.train.batch_size} x {c.data.seq_len} = {tokens:,} tokens/step | "
            f"remat={c.model.remat} scan_layers={c.model.scan_layers} dtype={c.model.dtype}",
            "memory per device (GiB, from the compiled program):",
            f"  parameters        {self.params_bytes / GiB:9.2f}",
            f"  optimizer state   {self.optimizer_bytes / GiB:9.2f}",
            f"  activations+temps {self.temp_bytes / GiB:9.2f}   (gradients, activations, scratch)",
            f"  peak              {self.peak_bytes / GiB:9.2f}   of {hw.memory_bytes / GiB:.2f} GiB on {hw.name}",
            f"FLOPs: model {self.model_flops_per_step:.3e} per step "
            f"({flops_per_token(c.model, c.data.seq_len):.3e} per token); compiled "
            f"{self.compiled_flops_per_device:.3e} per device per step",
            f"roofline on {hw.name} ({hw.peak_flops / 1e12:g} TFLOP/s bf16, {hw.memory_bandwidth / 1e12:g} TB/s): "
            f"compute {self.compute_seconds:.3f}s, memory {self.memory_seconds:.3f}s, "
            f"communication {self.communication_seconds:.3f}s",
            f"  step time {self.step_seconds:.3f}s | {self.tokens_per_second:,.0f} tokens/s | MFU {self.mfu:.1%}"
            f"   (without overlap: {self.serial_seconds:.3f}s, "
            f"{self.tokens_per_second * self.step_seconds / self.serial_seconds:,.0f} tokens/s)",
        ]
        if self.fits:
            lines.append(f"FITS: peak {self.peak_bytes / GiB:.2f} GiB <= {hw.memory_bytes / GiB:.2f} GiB per device")
        else:
            lines.append(f"DOES NOT FIT: peak {self.peak_bytes / GiB:.2f} GiB > {hw.memory_bytes / GiB:.2f} GiB per "
                         f"device: shard more (mesh fsdp/tensor), raise train.microbatches, use model.remat=full, "
                         f"or use more devices")
        lines.append(f"(compiled in {self.compile_seconds:.0f}s on {jax.devices()[0].platform})")
        return "\n".join(lines)


def _communication_bytes(plan_mesh: dict, param_bytes_compute: float, config: Config) -> float:
    """Bytes each device sends per step in collectives (ring algorithms): FSDP all-gathers the
    weights twice (forward, backward) and reduce-scatters the gradients; data parallelism
    all-reduces gradients; tensor parallelism all-reduces activations 4 times per layer."""
    data, fsdp, tensor = plan_mesh["data"], plan_mesh["fsdp"], plan_mesh["tensor"]
    per_tensor_shard = param_bytes_compute / tensor
    total = 0.0
    if fsdp > 1:
        total += 3 * per_tensor_shard * (fsdp - 1) / fsdp
    if data > 1:
        total += 2 * per_tensor_shard / fsdp * (data - 1) / data
    if tensor > 1:
        m = config.model
        rows = config.train.batch_size // (data * fsdp)
        activation = rows * config.data.seq_len * m.embed_dim * jnp.dtype(m.dtype).itemsize
        total += 4 * m.num_layers * 2 * activation * (tensor - 1) / tensor
    return total


def memory_traffic(config: Config, mesh_shape: dict, params_bytes_per_device: int) -> float:
    """Analytic HBM bytes one device reads and writes per step (used when the compiled program
    hides loops from XLA's cost analysis): per microbatch the gathered weights in the compute
    dtype are read forward, twice backward and once more if rematerialised, and attention
    scores [rows, heads, L, L] make ~4 float32 passes; the optimizer reads and writes its
    float32 state (params, 2 moments, gradients) once per step."""
    m, data, fsdp, tensor = config.model, mesh_shape["data"], mesh_shape["fsdp"], mesh_shape["tensor"]
    itemsize = jnp.dtype(m.dtype).itemsize
    weights = matmul_params(m) / tensor * itemsize
    passes = 3 + (m.remat != "none")
    rows = config.train.batch_size / (data * fsdp)  # per device, whole step
    seq = config.data.seq_len
    attention = rows * m.num_layers * (m.num_heads / tensor) * seq * seq * 4 * 4
    activations = rows * m.num_layers * seq * (4 * m.embed_dim + 3 * m.mlp_dim / tensor) * itemsize * passes
    optimizer = params_bytes_per_device * 7  # read p, m, v, g; write p, m, v (float32 each)
    return config.train.microbatches * weights * passes + attention + activations + optimizer


def plan(config: Config, hw: Hardware, devices=None) -> Plan:
    """Compiles the real train step for `config.mesh` over `devices` (default: all) and
    estimates memory and speed on `hw`. Allocates no parameters."""
    import time

    from lm import assembly, sharding

    if config.model.vocab_size == 0:
        raise ConfigError("planning needs an explicit model.vocab_size (no tokenizer is loaded)")
    devices = list(devices if devices is not None else jax.devices())
    mesh = sharding.make_mesh(config.mesh, devices)
    _, state_shardings, abstract_state, _, train_step, _ = assembly.build_steps(config, config.model, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    shape = (config.train.batch_size, config.data.seq_len)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.float32 if k == "weights" else jnp.int32, sharding=batch_sharding)
             for k in ("inputs", "targets", "positions", "segment_ids", "weights", "target_bytes")}
    started = time.time()
    with sharding.activation_rules(mesh):
        compiled = train_step.lower(abstract_state, batch).compile()
    compile_seconds = time.time() - started
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})

    m = config.model
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state.params))
    params_bytes = _shard_bytes(abstract_state.params)
    optimizer_bytes = _shard_bytes(abstract_state.opt_state)
    argument, output = memory.argument_size_in_bytes, memory.output_size_in_bytes
    alias, temp = memory.alias_size_in_bytes, memory.temp_size_in_bytes
    peak = argument + output - alias + temp

    tokens = config.train.batch_size * config.data.seq_len
    model_flops = flops_per_token(m, config.data.seq_len) * tokens
    n = len(devices)
    compiled_flops = float(cost.get("flops", 0.0))
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    peak_flops = hw.peak_flops if m.dtype == "bfloat16" else hw.peak_flops_fp32
    # Compute time from the compiled program's FLOPs (includes rematerialisation), but never
    # below the model FLOPs' share; memory time from its bytes accessed.
    # Full rematerialisation runs the forward twice: 8 instead of 6 FLOPs per weight and token.
    hardware_flops = model_flops * (8 / 6 if m.remat == "full" else 1.0)
    compute = max(compiled_flops, hardware_flops / n) / peak_flops
    # XLA's cost analysis counts a while loop's body once (nn.scan over layers, microbatches):
    # when its FLOPs fall short of the model's, it has hidden loops and its bytes are too low,
    # so use the analytic estimate of memory traffic instead.
    if compiled_flops < 0.9 * model_flops / n:
        bytes_accessed = memory_traffic(config, dict(mesh.shape), params_bytes)
    memory_time = bytes_accessed / hw.memory_bandwidth
    compute_bytes = num_params * jnp.dtype(m.dtype).itemsize
    communication = _communication_bytes(dict(mesh.shape), compute_bytes, config) / hw.interconnect_bandwidth
    # Roofline: compute and memory traffic overlap; collectives assumed to overlap with
    # compute too (XLA's async collectives) so the step takes the longest of the three.
    step = max(compute, memory_time, communication)
    serial = compute + memory_time + communication
    return Plan(config, hw, dict(mesh.shape), n, num_params, params_bytes, optimizer_bytes, argument, output, alias,
                temp, peak, model_flops, compiled_flops, bytes_accessed, compute, memory_time, communication, step,
                serial, tokens / step, model_flops / (step * n * peak_flops), compile_seconds)


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_steps(config: Config, num_steps: int = 5) -> dict:
    """Runs `num_steps` real train steps here on random tokens (after compiling) and returns the
    median step time and the peak memory they added: the process's resident-set high-water
    mark (reset after compiling, Linux /proc/self/clear_refs) minus its size before the state
    was allocated. The reference the CPU predictions are checked against."""
    import time

    from lm import assembly, sharding

    mesh = sharding.make_mesh(config.mesh)
    _, _, abstract_state, init_fn, train_step, _ = assembly.build_steps(config, config.model, mesh)
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
        baseline = _rss("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark: compiling is not training
        state = init_compiled()
        times = []
        for _ in range(num_steps):
            started = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - started)
        peak = _rss("VmHWM") - baseline
    return {"step_seconds": float(np.median(times)), "step_times": times, "peak_bytes": int(peak),
            "loss": float(metrics["loss"])}
