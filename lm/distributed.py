"""Multi-host start-up: one `jax.distributed.initialize` call, from flags or the environment.

Every process of a multi-host run executes the same program; after `initialize` each sees
all devices (`jax.devices()`) but owns only its local ones, loads only its slice of the data
(`pipeline.train_iterator(process_index, process_count)`) and builds global arrays from it
(`sharding.to_global`). Only process 0 writes logs; every process writes its shards of a
checkpoint (orbax coordinates the commit).

How the coordinator is found, in order:
  1. explicit: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`
     (or the environment variables LM_COORDINATOR_ADDRESS, LM_NUM_PROCESSES, LM_PROCESS_ID);
  2. auto-detected by jax: on a Cloud TPU VM pod slice (TPU metadata) and under SLURM
     (SLURM_JOB_ID / SLURM_NTASKS / SLURM_PROCID ...), `jax.distributed.initialize()` with no
     arguments finds the coordinator itself. We call it when SLURM runs more than one task, when
     TPU worker variables are set, or when LM_DISTRIBUTED=auto (tools/launch.py sets it on TPU);
  3. otherwise a single process: nothing to initialise.
"""

from __future__ import annotations

import dataclasses
import os

import jax

from lm.config import ConfigError


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    coordinator_address: str = ""  # HOST:PORT of process 0
    num_processes: int = 0  # 0: not set
    process_id: int = -1  # -1: not set
    local_device_ids: tuple[int, ...] | None = None


def from_env(environ=None) -> DistributedConfig:
    environ = os.environ if environ is None else environ
    return DistributedConfig(
        coordinator_address=environ.get("LM_COORDINATOR_ADDRESS", ""),
        num_processes=int(environ.get("LM_NUM_PROCESSES", "0") or 0),
        process_id=int(environ.get("LM_PROCESS_ID", "-1") or -1))


def detect_cluster(environ=None) -> str | None:
    """'slurm', 'tpu' or 'forced' (LM_DISTRIBUTED=auto) when jax should find the coordinator itself."""
    environ = os.environ if environ is None else environ
    if environ.get("LM_DISTRIBUTED") == "auto":  # set by tools/launch.py on TPU pod slices
        return "forced"
    if environ.get("SLURM_JOB_ID") and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    if environ.get("TPU_WORKER_HOSTNAMES") or environ.get("CLOUD_TPU_TASK_ID") or environ.get("TPU_WORKER_ID"):
        return "tpu"
    return None


def resolve(flags: DistributedConfig | None = None, environ=None) -> tuple[str, dict]:
    """Decides how to initialise: ("explicit", kwargs), ("auto", {}) or ("single", {}).
    Flags win over LM_* environment variables. A partial explicit setting is an error that
    names what is missing."""
    env = from_env(environ)
    flags = flags or DistributedConfig()
    address = flags.coordinator_address or env.coordinator_address
    count = flags.num_processes or env.num_processes
    index = flags.process_id if flags.process_id >= 0 else env.process_id
    if address or count or index >= 0:
        missing = [name for name, given in (("--coordinator_address", address), ("--num_processes", count),
                                            ("--process_id", index >= 0)) if not given]
        if missing:
            raise ConfigError(f"multi-host start-up needs --coordinator_address, --num_processes and --process_id "
                              f"together; missing {', '.join(missing)}")
        if not 0 <= index < count:
            raise ConfigError(f"--process_id={index} must be in [0, --num_processes={count})")
        kwargs = dict(coordinator_address=address, num_processes=count, process_id=index)
        if flags.local_device_ids is not None:
            kwargs["local_device_ids"] = list(flags.local_device_ids)
        return "explicit", kwargs
    if detect_cluster(environ):
        return "auto", {}
    return "single", {}


_initialized = False


def initialize(flags: DistributedConfig | None = None, environ=None) -> str:
    """Initialises jax.distributed once (before any other jax call that touches devices).
    Returns the mode used: explicit | auto | single."""
    global _initialized
    mode, kwargs = resolve(flags, environ)
    if mode == "single" or _initialized:
        return mode
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return mode


def shutdown() -> None:
    global _initialized
    if _initialized:
        jax.distributed.shutdown()
        _initialized = False
