"""One XLA:CPU device per core, chosen before jax is imported.

XLA:CPU parallelises a large matmul over the cores but runs most other fusions (elementwise
passes, softmax, norms, layout copies) on one thread, so a single-device train step keeps a
2-core machine only partly busy (measured: ~1.15 cores on configs/bench_cpu.py). Splitting the
host into one device per core and sharding the batch over them (the mesh's `data` axis: the same
jitted step, with explicit shardings) runs those passes on every core: 1.5x the tokens/s of one
device on bench_cpu in float32 (docs/performance.md). It is a property of the process, fixed
when jax starts, so tools read `--cpu_devices` from the command line before importing jax.
The XLA flag only shapes the CPU platform: on GPU and TPU hosts it changes nothing.

`--cpu_fuse_elementwise` lets XLA:CPU's matmul library (YNNPACK) take the elementwise work
around each matmul into its own fusion. Without it, the residual stream's gradient, a chain of
additions across all layers, is fused into every layout copy that feeds a weight-gradient matmul
and recomputed there (~20% of a bench_cpu step's thread time in `copy_bitcast_fusion`, measured
with tools/profile_step.py). With it those copies almost vanish. Since the norms and the GELU
compute their own backward (lm/primitives.py) the chain is no longer recomputed and the switch no
longer pays (same MFU, 1.2 GB more memory on bench_cpu: docs/performance.md); it stays, off by
default, for shapes where it might.
"""

from __future__ import annotations

import os
import re

_FLAG = "--xla_force_host_platform_device_count"
_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def configure(argv: list[str], default: int, fuse_elementwise: bool = False) -> int:
    """Reads --cpu_devices=N from argv (0: one per core; default `default`) and
    --cpu_fuse_elementwise[=true|false] (default `fuse_elementwise`), and sets XLA_FLAGS
    accordingly, unless the environment already fixes the setting. Returns N."""
    count = default
    for arg in argv[1:]:
        if arg in ("--cpu_devices", "--cpu_fuse_elementwise=") or re.fullmatch(r"--cpu_devices=.*", arg) and \
                not re.fullmatch(r"--cpu_devices=\d+", arg):
            # Read here, before jax starts and before absl parses the flags: only the --flag=N form.
            raise SystemExit(f"error: write --cpu_devices=N, one word with '=' and a whole number (got {arg!r}); "
                             f"it is read before the other flags, when jax starts")
        if match := re.fullmatch(r"--cpu_devices=(\d+)", arg):
            count = int(match[1])
        elif match := re.fullmatch(r"--(no)?cpu_fuse_elementwise(=(true|false|True|False|1|0))?", arg):
            fuse_elementwise = not match[1] and (match[3] or "true").lower() in ("true", "1")
    count = count or os.cpu_count() or 1
    flags = os.environ.get("XLA_FLAGS", "")
    if count > 1 and _FLAG not in flags:
        flags = f"{flags} {_FLAG}={count}"
    if fuse_elementwise and _FUSION_FLAG not in flags:
        flags = f"{flags} {_FUSION_FLAG}=+eltwise"
    os.environ["XLA_FLAGS"] = flags.strip()
    return count


HELP = ("XLA:CPU devices to split this host into (0: one per core); the batch is sharded over them "
        "(mesh data axis). Ignored where XLA_FLAGS already sets the host device count.")
FUSE_HELP = ("Let XLA:CPU's matmul library fuse the elementwise work around matmuls (see lm/host_devices.py); "
             "read before jax starts.")

