"""The chips `lm` plans for and measures on: published peaks, and this machine's measured ones.

`CHIPS` holds each accelerator's datasheet figures (dense, no sparsity), with the document
they come from. `peak_flops(chip, dtype)` is the one denominator of MFU in `lm` (the planner
and, later, the training loop's `train/mfu`); `chip_name(device)` names the chip a jax device
is, so a running job can find its own row. The "cpu" row is this 2-core machine, measured
(`matmul_peak`); `peak_rss_bytes` and friends read the process's memory high-water mark.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip's published figures. Bandwidths are bytes/s per chip, one direction."""
    name: str
    bf16_flops: float  # dense bf16 matmul FLOP/s
    fp8_flops: float | None  # dense fp8 matmul FLOP/s; None: no fp8 matmul units
    fp32_flops: float  # float32 matmuls under jax's default precision (TF32 on NVIDIA, one bf16 pass on TPU)
    hbm_bytes: float
    hbm_bandwidth: float
    interconnect_bandwidth: float  # within a node (NVLink) or a slice (ICI), per chip, one direction
    node_size: int  # chips joined by `interconnect_bandwidth`; beyond it traffic takes `network_bandwidth`
    network_bandwidth: float  # per chip between nodes (InfiniBand / DCN), one direction
    source: str
    # Efficiency model (lm/step_time.py), fitted to the published runs in docs/scale.md: the
    # fraction of bf16 peak that large matmuls and fused (flash) attention reach in a real step.
    matmul_efficiency: float = 0.7
    flash_attention_efficiency: float = 0.45

    @property
    def platform(self) -> str:
        return "tpu" if self.name.startswith("tpu") else ("cpu" if self.name == "cpu" else "gpu")


_NVIDIA_NODE = dict(node_size=8, network_bandwidth=50e9)  # 8 GPUs per HGX/DGX node, one 400 Gb/s NIC each
CHIPS = {
    "h100": Chip("h100", 989e12, 1979e12, 494e12, 80e9, 3.35e12, 450e9, **_NVIDIA_NODE,
                 source="NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989 TFLOPS bf16 / 1979 fp8 dense, "
                        "80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s (both directions)",
                 matmul_efficiency=0.58, flash_attention_efficiency=0.45),
    "h200": Chip("h200", 989e12, 1979e12, 494e12, 141e9, 4.8e12, 450e9, **_NVIDIA_NODE,
                 source="NVIDIA H200 Tensor Core GPU datasheet (SXM): 989 TFLOPS bf16 / 1979 fp8 dense, "
                        "141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s",
                 matmul_efficiency=0.58, flash_attention_efficiency=0.45),
    "b200": Chip("b200", 2.25e15, 4.5e15, 1.125e15, 180e9, 7.7e12, 900e9, **_NVIDIA_NODE,
                 source="NVIDIA HGX B200 datasheet, per GPU (sparse figures halved): 2.25 PFLOPS bf16 / "
                        "4.5 fp8 dense, 180 GB HBM3e at 7.7 TB/s, NVLink 5 1.8 TB/s",
                 matmul_efficiency=0.55, flash_attention_efficiency=0.4),
    "a100": Chip("a100", 312e12, None, 156e12, 80e9, 2.039e12, 300e9, node_size=8, network_bandwidth=25e9,
                 source="NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 312 TFLOPS bf16 dense, no fp8, "
                        "2,039 GB/s HBM2e, NVLink 600 GB/s",
                 matmul_efficiency=0.62, flash_attention_efficiency=0.45),
    "tpu-v4": Chip("tpu-v4", 275e12, None, 275e12, 32 * GiB, 1.2e12, 300e9, node_size=4096, network_bandwidth=25e9,
                   source="Cloud TPU v4 docs (cloud.google.com/tpu/docs/v4): 275 TFLOPS bf16, 32 GiB HBM2 at "
                          "1,200 GB/s; ICI 6 links x 50 GB/s (Jouppi et al., ISCA 2023)",
                   matmul_efficiency=0.72, flash_attention_efficiency=0.55),
    "tpu-v5e": Chip("tpu-v5e", 197e12, None, 197e12, 16 * GiB, 819e9, 200e9, node_size=256, network_bandwidth=25e9,
                    source="Cloud TPU v5e docs (cloud.google.com/tpu/docs/v5e): 197 TFLOPS bf16 (394 int8), "
                           "16 GB HBM2 at 819 GB/s, ICI 1,600 Gbps",
                    matmul_efficiency=0.72, flash_attention_efficiency=0.55),
    "tpu-v5p": Chip("tpu-v5p", 459e12, None, 459e12, 95 * GiB, 2.765e12, 600e9, node_size=8960,
                    network_bandwidth=25e9,
                    source="Cloud TPU v5p docs (cloud.google.com/tpu/docs/v5p): 459 TFLOPS bf16 (918 int8), "
                           "95 GB HBM2e at 2,765 GB/s, ICI 4,800 Gbps",
                    matmul_efficiency=0.72, flash_attention_efficiency=0.55),
    "tpu-v6e": Chip("tpu-v6e", 918e12, None, 918e12, 32 * GiB, 1.64e12, 448e9, node_size=256, network_bandwidth=25e9,
                    source="Cloud TPU v6e (Trillium) docs (cloud.google.com/tpu/docs/v6e): 918 TFLOPS bf16 "
                           "(1,836 int8), 32 GB HBM at 1,640 GB/s, ICI 3,584 Gbps",
                    matmul_efficiency=0.56, flash_attention_efficiency=0.45),
    # This machine (2 x86-64 cores), measured with matmul_peak(): jitted matmul ~175 GFLOP/s
    # float32, ~300 GFLOP/s bf16 inputs with float32 accumulation; stream copy ~10 GB/s.
    # Simulated devices exchange "collectives" as memory copies.
    "cpu": Chip("cpu", 300e9, None, 175e9, 8 * GiB, 10e9, 10e9, node_size=1 << 20, network_bandwidth=10e9,
                source="measured on this 2-core CPU (lm.hardware.matmul_peak; docs/scale.md)",
                matmul_efficiency=0.9, flash_attention_efficiency=0.3),
}

# jax's device_kind strings -> CHIPS names (NVIDIA reports e.g. "NVIDIA H100 80GB HBM3").
_DEVICE_KINDS = (("h100", "h100"), ("h200", "h200"), ("gh200", "h200"), ("b200", "b200"), ("a100", "a100"),
                 ("tpu v4", "tpu-v4"), ("tpu v5 lite", "tpu-v5e"), ("tpu v5e", "tpu-v5e"), ("tpu v5p", "tpu-v5p"),
                 ("tpu v5", "tpu-v5p"), ("tpu v6 lite", "tpu-v6e"), ("tpu v6e", "tpu-v6e"))


def chip(name: str) -> Chip:
    """The CHIPS row for a name ("h100", "tpu-v5p", ...) or a jax device_kind string."""
    if name in CHIPS:
        return CHIPS[name]
    kind = name.lower()
    for pattern, chip_key in _DEVICE_KINDS:
        if pattern in kind:
            return CHIPS[chip_key]
    if kind in ("cpu", "host"):
        return CHIPS["cpu"]
    raise ValueError(f"unknown chip {name!r}: choose one of {', '.join(CHIPS)} (or a jax device_kind naming one)")


def chip_name(device=None) -> str:
    """The CHIPS name of a jax device (default: the first local one); "cpu" for host devices."""
    device = device if device is not None else jax.local_devices()[0]
    if device.platform == "cpu":
        return "cpu"
    return chip(device.device_kind).name


def peak_flops(chip_or_kind: str, dtype: str = "bfloat16") -> float:
    """Dense matmul FLOP/s per chip in `dtype` ("bfloat16", "float8"/"fp8", "float32"): MFU's
    denominator. Chips without fp8 units (A100, TPUs) raise for "float8"."""
    row = chip(chip_or_kind)
    dtype = str(jnp.dtype(dtype)) if dtype not in ("float8", "fp8") else "float8"
    if dtype.startswith("float8"):
        if row.fp8_flops is None:
            raise ValueError(f"{row.name} has no fp8 matmul units")
        return row.fp8_flops
    return row.fp32_flops if dtype == "float32" else row.bf16_flops


def matmul_peak(dtype: str = "float32", size: int = 1536, repeats: int = 9, clock=time.perf_counter) -> float:
    """FLOP/s of a large jitted square matmul in `dtype`, accumulated in float32 (what the
    model's matmuls do), the fastest of `repeats`. bfloat16 inputs with a bfloat16 result run
    slower than float32 on XLA:CPU; with float32 accumulation they run faster. `clock`:
    wall time by default; `time.process_time` gives FLOPs per CPU second (`matmul_cpu_peak`)."""
    if dtype == "bfloat16" and jax.default_backend() == "cpu" and not cpu_has_bfloat16_matmul():
        # Without bfloat16 units the model's dots multiply bfloat16-rounded operands with float32
        # kernels (lm/primitives.dot), so float32's rate is the most its matmuls can reach; the
        # emulated bfloat16 kernel's slower rate would let MFU read near 100%.
        dtype = "float32"
    # 1536: on the 2-core Ice Lake Xeon it read as high as 2048 (4 interleaved rounds: 166-242 against
    # 158-197 GFLOP/s) in 0.5 s instead of 1.3 s of every launch.
    # Operands made on the host: jax.random would compile two programs (~0.4 s of every launch).
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((size, size), np.float32), dtype) for _ in range(2))
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        started = clock()
        matmul(a, b).block_until_ready()
        times.append(clock() - started)
    # The fastest repeat: a peak is what the hardware can do, and on a shared machine other work
    # only ever slows a repeat down (the median moved 10-15% between runs on an idle 2-core VM).
    return 2 * size ** 3 / float(np.min(times))


def matmul_cpu_peak(dtype: str = "float32", size: int = 1536, repeats: int = 9) -> float:
    """As `matmul_peak`, per second of process CPU time (all threads): the denominator of the
    CPU-time MFU, which a busy machine disturbs far less than the wall-clock one."""
    return matmul_peak(dtype, size, repeats, clock=time.process_time)


def rss_bytes(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc/self/status (Linux): VmRSS (resident now) or
    VmHWM (resident high-water mark); 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Resets VmHWM to the current resident size (Linux /proc/self/clear_refs), so a peak taken
    after it excludes, say, compiling."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_info() -> dict:
    """This host CPU's model name and feature flags from /proc/cpuinfo (Linux; empty elsewhere)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = info.get("flags") or info.get("Features") or ""  # x86 | aarch64
    return {"cpu_model": info.get("model name", platform.processor() or "unknown"), "cpu_flags": flags.split()}


# x86: AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake+) or AMX (Intel Sapphire Rapids+); aarch64: BF16.
_BFLOAT16_MATMUL_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.cache
def cpu_has_bfloat16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware. Without it XLA:CPU emulates bfloat16 x
    bfloat16 -> float32 matmuls, measured ~30% slower than the same products in float32 on an
    Intel Xeon with AVX-512 but no AVX512-BF16/AMX (docs/performance.md). Unknown CPUs count as
    having it (the plain path)."""
    flags = set(cpu_info()["cpu_flags"])
    return not flags or bool(flags & _BFLOAT16_MATMUL_FLAGS)
