"""One XLA:CPU device per core, chosen before jax is imported.

XLA:CPU parallelises a large matmul over the cores but runs most other fusions (elementwise
passes, softmax, norms, layout copies) on one thread, so a single-device train step keeps a
2-core machine only partly busy (measured: ~1.15 cores on configs/bench_cpu.py). Splitting the
host into one device per core and sharding the batch over them (the mesh's `data` axis: the same
jitted step, with explicit shardings) runs those passes on every core: 1.5x the tokens/s of one
device on bench_cpu in float32 (docs/performance.md). It is a property of the process, fixed
when jax starts, so tools read `--cpu_devices` from the command line before importing jax.
The XLA flag only shapes the CPU platform: on GPU and TPU hosts it changes nothing.
"""

from __future__ import annotations

import os
import re

_FLAG = "--xla_force_host_platform_device_count"


def configure(argv: list[str], default: int) -> int:
    """Reads --cpu_devices=N from argv (0: one per core; default `default`) and sets XLA_FLAGS
    accordingly, unless the environment already fixes the host device count. Returns N."""
    count = default
    for arg in argv[1:]:
        if match := re.fullmatch(r"--cpu_devices=(\d+)", arg):
            count = int(match[1])
    count = count or os.cpu_count() or 1
    flags = os.environ.get("XLA_FLAGS", "")
    if count > 1 and _FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()
    return count


HELP = ("XLA:CPU devices to split this host into (0: one per core); the batch is sharded over them "
        "(mesh data axis). Ignored where XLA_FLAGS already sets the host device count.")
