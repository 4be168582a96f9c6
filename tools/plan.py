"""Will a run fit, and how fast will it go? Planned on this machine, without the hardware.

  python tools/plan.py --config=configs/llama_7b.py --devices=8 --hardware=h100 \
      [--mesh=data=1,fsdp=8,tensor=1] [--config.train.microbatches=4 ...] [--measure] [--search]

Compiles the real train step ahead of time for `--devices` simulated devices (abstract
shapes: no parameter is allocated), prints per-device memory for parameters, optimizer
state and activations from the compiled program, the FLOPs per step and per device, and the
step time, tokens/s and MFU on `--hardware` predicted by lm/step_time.py's efficiency model
(calibrated against published MaxText runs); ends with one line: FITS or DOES NOT FIT, MFU.
`--search` scores mesh shapes, microbatches, remat policies and the fused head's chunk
(train.loss_chunk, language models) for the target and prints the fastest plans that fit (each
confirmed by compiling it).
`--measure` (with --hardware=cpu) also runs a few real steps here and prints measured step
time and peak memory beside the prediction. See docs/scale.md.
"""
import os
import sys


def _preset_devices(argv) -> None:
    """XLA reads the simulated device count once, when jax starts: set it before importing jax."""
    count = None
    for arg in argv:
        if arg.startswith("--devices="):
            count = int(arg.split("=", 1)[1])
    if count and count > 1:
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
        os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


_preset_devices(sys.argv)

import dataclasses  # noqa: E402
import json  # noqa: E402

from absl import flags  # noqa: E402

from lm import cli, hardware, layout_search, planning  # noqa: E402
from lm.config import ConfigError, MeshConfig  # noqa: E402

_CONFIG = cli.define_config_flag("configs/llama_7b.py")
_DEVICES = flags.DEFINE_integer("devices", 1, "Number of devices to plan for (simulated here).")
_HARDWARE = flags.DEFINE_enum("hardware", "h100", list(hardware.CHIPS), "Chip to plan for (lm/hardware.py).")
_MESH = flags.DEFINE_string("mesh", "", "Mesh sizes, e.g. data=2,fsdp=4,tensor=1 (default: the config's).")
_MEASURE = flags.DEFINE_integer("measure", 0, "Also run this many real steps here and report measured time/memory.")
_JSON = flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")
_SEARCH = flags.DEFINE_bool("search", False, "Search mesh shapes, microbatches, remat policies and loss chunks; "
                                              "print the best that fit.")
_TOP = flags.DEFINE_integer("top", 3, "--search: how many fitting plans to confirm by compiling and print.")


def parse_mesh(text: str, default: MeshConfig) -> MeshConfig:
    if not text:
        return default
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in sizes or not value.lstrip("-").isdigit():
            raise ConfigError(f"--mesh={text!r}: expected comma-separated data=N,fsdp=N,tensor=N")
        sizes[name] = int(value)
    return MeshConfig(**sizes)


def main(argv):
    del argv
    import jax

    config = cli.load(_CONFIG)
    config = dataclasses.replace(config, mesh=parse_mesh(_MESH.value, config.mesh))
    if jax.device_count() != _DEVICES.value:
        raise ConfigError(f"--devices={_DEVICES.value} but jax sees {jax.device_count()} devices")
    chip = planning.hardware(_HARDWARE.value)
    if _SEARCH.value:
        ranked = layout_search.candidates(config, chip, jax.device_count())
        print(f"search: {len(ranked)} layouts of {jax.device_count()} x {chip.name}; compiling the fastest that "
              f"should fit:", flush=True)
        best = layout_search.search(config, chip, confirm=_TOP.value, log=lambda line: print("  tried " + line, flush=True))
        print(f"best plans that fit on {jax.device_count()} x {chip.name}, by predicted tokens/s:")
        for rank, candidate in enumerate(best, 1):
            print(f"  {rank}. {candidate.describe()}")
        if not best:
            print("  none fits: use more devices or a smaller train.batch_size")
        if _JSON.value:
            with open(_JSON.value, "w") as f:
                json.dump([{"mesh": c.mesh, "microbatches": c.microbatches, "remat": c.remat,
                            "loss_chunk": c.loss_chunk,
                            "tokens_per_second": c.tokens_per_second, "mfu": c.time.mfu,
                            "peak_bytes": c.plan.peak_bytes, "fits": c.plan.fits} for c in best], f, indent=2)
        return
    result = planning.plan(config, chip)
    print(result.report(), flush=True)
    figures = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("config", "hardware", "time")}
    figures["time"] = dataclasses.asdict(result.time)
    figures.update(fits=result.fits, hardware=result.hardware.name)
    if _MEASURE.value:
        measured = planning.measure_steps(config, _MEASURE.value)
        figures["measured"] = measured
        print(f"measured here: step {measured['step_seconds']:.3f}s (predicted {result.step_seconds:.3f}s, "
              f"error {result.step_seconds / measured['step_seconds'] - 1:+.0%}) | peak memory "
              f"{measured['peak_bytes'] / hardware.GiB:.3f} GiB (predicted {result.peak_bytes / hardware.GiB:.3f} GiB, "
              f"error {result.peak_bytes / measured['peak_bytes'] - 1:+.0%})", flush=True)
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(figures, f, indent=2, default=str)


if __name__ == "__main__":
    cli.run(main)
