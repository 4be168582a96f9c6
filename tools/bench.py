"""Train-step throughput, MFU and memory, beside a peer framework, measured in one run.

  python tools/bench.py --config=configs/bench_cpu.py [--config.model.dtype=bfloat16 ...] \
      --steps=10 [--peer=torch|hf] [--rounds=3] [--input_pipeline] [--json=FILE] [--markdown=FILE]

On a GPU or TPU (set JAX_PLATFORMS, e.g. JAX_PLATFORMS=cuda: this tool defaults to the CPU), MFU
is against the chips' datasheet peak (lm/hardware.py, as the training loop's train/mfu), with the
measured matmul peak beside it (`matmul_mfu`).

Order: this machine's matmul peak (a large jitted matmul in the model's compute dtype with
float32 accumulation), our step (compile timed on its own, then warm-up, then `--steps` timed
steps), the peer's step at identical shapes, the peak again. With `--peer=torch` (a minimal PyTorch GPT of
our exact shapes, diagnostics/peers/torch_gpt.py, eager and under torch.compile, autocast when ours
is bfloat16) our steps and the peer's alternate for `--rounds` rounds of `--steps` each. MFU = model FLOPs per second
(lm.planning.flops_per_token) / the higher of the two peak readings (each the fastest of its
repeats), so a reading slowed by other work does not flatter the result. Prints a summary and a markdown table row.

On a shared machine wall time moves by 2-3x with other jobs; process CPU time (all threads)
moves far less. So the same figures are also reported per CPU second (`*_cpu_*` keys: our step
and the peer's CPU time, the matmul's FLOPs per CPU second, `cpu_mfu`), with the load average
at start and end (`load_average`), so a contended run can still be compared like for like.
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from lm import host_devices  # noqa: E402 (before jax: one XLA:CPU device per core by default)

FUSE_ELEMENTWISE = False  # off since the GELU/norm backward rewrite: idle bench_cpu 1,644 vs 1,517 tokens/s, 1.2 GB less (docs/performance.md)
host_devices.configure(sys.argv, default=0, fuse_elementwise=FUSE_ELEMENTWISE)

import json  # noqa: E402
import platform  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from diagnostics import benchmark  # noqa: E402
from lm import cli, goodput, hardware  # noqa: E402

_CONFIG = cli.define_config_flag("configs/bench_cpu.py")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_PEER = flags.DEFINE_enum("peer", "none", ["none", "hf", "torch"], "Also train this peer at identical shapes.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "--peer=torch: rounds of --steps steps, ours and the peer's alternating.")
_INPUT = flags.DEFINE_bool("input_pipeline", False, "Also measure the data pipeline's tokens/s on its own.")
_JSON = flags.DEFINE_string("json", "", "Write every figure to this JSON file.")
flags.DEFINE_integer("cpu_devices", 0, host_devices.HELP + " Default here: one per core.")
flags.DEFINE_bool("cpu_fuse_elementwise", FUSE_ELEMENTWISE, host_devices.FUSE_HELP)
_MARKDOWN = flags.DEFINE_string("markdown", "", "Append the markdown table row to this file.")

MARKDOWN_HEADER = ("| config | dtype | tokens/s | MFU | step (median, p10-p90) | compile | peak memory / estimate "
                   "| peer tokens/s | ours / peer |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def spread(times) -> str:
    return f"{np.median(times):.3f} s ({np.percentile(times, 10):.3f}-{np.percentile(times, 90):.3f})"


def main(argv):
    del argv
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # report the real compile time
    config = cli.load(_CONFIG)
    if _PEER.value == "hf":
        from diagnostics.peers import hf_gpt2
        hf_gpt2.check_shapes(config)  # before any long work
    if _PEER.value == "torch":
        from diagnostics.peers import torch_gpt
        torch_gpt.check_shapes(config)
    dtype = config.model.dtype
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    figures = {"config": name, "dtype": dtype, "devices": jax.device_count(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}",
               "xla_flags": os.environ.get("XLA_FLAGS", ""), **hardware.cpu_info()}
    print(f"{jax.device_count()} {jax.default_backend()} device(s); the batch is sharded over them (mesh data axis)",
          flush=True)

    load_before = benchmark.load_average()
    print(f"peak: timing a 1536^3 {dtype} matmul (float32 accumulation) ...", flush=True)
    peak_before = benchmark.matmul_peak(dtype)
    cpu_peak = benchmark.matmul_cpu_peak(dtype)
    print(f"peak: {peak_before / 1e9:.1f} GFLOP/s", flush=True)
    if _INPUT.value:
        figures.update(benchmark.input_pipeline(config))
        print(f"input pipeline: {figures['input_tokens_per_sec']:,.0f} tokens/s on its own (pre-pass path); "
              f"streaming {figures['streaming_tokens_per_sec_workers_0']:,.0f} in-process, "
              f"{figures['streaming_tokens_per_sec_workers_2']:,.0f} with 2 worker processes", flush=True)

    torch_peer = torch_gpt.Peer(config, _STEPS.value, _WARMUP.value) if _PEER.value == "torch" else None
    ours = benchmark.train_steps(config, _STEPS.value, _WARMUP.value, _ROUNDS.value,
                                 torch_peer.run_round if torch_peer else None)
    if torch_peer:
        torch_peer.close()
        figures.update(torch_peer.figures())
    print(f"ours: compile {ours.compile_seconds:.1f} s | step {spread(ours.step_seconds)} | "
          f"{ours.tokens_per_sec:,.0f} tokens/s | {ours.model_flops_per_sec / 1e9:.1f} model GFLOP/s", flush=True)
    if _PEER.value == "hf":
        peer = hf_gpt2.train_steps_in_subprocess(config, _STEPS.value, _WARMUP.value)
        figures.update(peer)
        print(f"peer: {peer['peer']} | step {spread(peer['peer_step_seconds'])} | "
              f"{peer['peer_tokens_per_sec']:,.0f} tokens/s", flush=True)
    peak_after = benchmark.matmul_peak(dtype)
    peak = max(peak_before, peak_after)  # the better reading: MFU is not flattered by a slow one
    cpu_peak = max(cpu_peak, benchmark.matmul_cpu_peak(dtype))  # the better reading: CPU time is not flattered by load
    cpu_median = float(np.median(ours.step_cpu_seconds))

    accelerator = jax.default_backend() != "cpu"
    if accelerator:  # MFU against the chips' datasheet peak (lm/hardware.py), as train/mfu; the matmul beside it
        figures.update({"chip": hardware.chip_name(), "matmul_peak_flops": peak,
                        "matmul_mfu": ours.model_flops_per_sec / peak})
        peak = goodput.peak_flops(dtype)
    figures.update({
        "tokens_per_sec": ours.tokens_per_sec,
        "mfu": ours.model_flops_per_sec / peak,
        "peak_flops": peak,
        "peak_flops_readings": [peak_before, peak_after],
        "flops_per_token": ours.flops_per_token,
        "model_flops_per_sec": ours.model_flops_per_sec,
        "step_seconds": ours.step_seconds,
        "step_seconds_median": ours.median_seconds,
        "compile_seconds": ours.compile_seconds,
        "tokens_per_step": ours.tokens_per_step,
        "peak_memory_bytes": ours.peak_memory_bytes,
        "memory_estimate_bytes": ours.memory_estimate_bytes,
        "memory_parts_bytes": ours.memory_parts,
        "compiled_temp_bytes": ours.compiled_temp_bytes,
        "loss": ours.loss,
        "step_cpu_seconds": ours.step_cpu_seconds,
        "tokens_per_cpu_sec": ours.tokens_per_step / cpu_median,
        "peak_flops_per_cpu_sec": cpu_peak,
        "cpu_mfu": ours.flops_per_token * ours.tokens_per_step / cpu_median / cpu_peak,
        "load_average": [load_before, benchmark.load_average()],
    })
    if "peer_tokens_per_sec" in figures:
        figures["speedup_over_peer"] = ours.tokens_per_sec / figures["peer_tokens_per_sec"]
        figures["speedup_over_peer_cpu"] = figures["tokens_per_cpu_sec"] / figures["peer_tokens_per_cpu_sec"]
    if "peer_compiled_tokens_per_sec" in figures:
        figures["speedup_over_peer_compiled"] = ours.tokens_per_sec / figures["peer_compiled_tokens_per_sec"]

    mib = benchmark.MiB
    parts = ", ".join(f"{k} {v / mib:,.0f}" for k, v in ours.memory_parts.items())
    print(f"\nFLOPs per token {ours.flops_per_token / 1e6:.1f} M (6 x matmul weights + 12 x layers x seq x width)")
    if accelerator:
        print(f"MFU {figures['mfu']:.1%} of {jax.device_count()} x {figures['chip']}'s {dtype} peak "
              f"({peak / 1e12:,.0f} TFLOP/s in all; lm/hardware.py); {figures['matmul_mfu']:.1%} of the measured "
              f"matmul peak {figures['matmul_peak_flops'] / 1e12:.1f} TFLOP/s")
    else:
        print(f"MFU {figures['mfu']:.1%} of the measured {dtype} peak {peak / 1e9:.1f} GFLOP/s "
              f"(readings {peak_before / 1e9:.1f}, {peak_after / 1e9:.1f})")
    print(f"memory: peak {ours.peak_memory_bytes / mib:,.0f} MiB vs estimate {ours.memory_estimate_bytes / mib:,.0f} "
          f"MiB ({parts}) = {ours.peak_memory_bytes / ours.memory_estimate_bytes:.2f}x")
    print(f"per CPU second: {figures['tokens_per_cpu_sec']:,.0f} tokens, MFU {figures['cpu_mfu']:.1%} of "
          f"{cpu_peak / 1e9:.1f} matmul GFLOP per CPU second; load average {figures['load_average'][0]:.1f} at start, "
          f"{figures['load_average'][1]:.1f} at end (this machine has {os.cpu_count()} cores)")
    if _INPUT.value:
        slowest = min(figures["streaming_tokens_per_sec_workers_0"], figures["streaming_tokens_per_sec_workers_2"])
        figures["streaming_input_over_train_step"] = slowest / ours.tokens_per_sec
        print(f"streaming input delivers {figures['streaming_input_over_train_step']:.1f}x what the train step consumes "
              f"(slower of in-process and 2 workers)")
    if "speedup_over_peer" in figures:
        print(f"ours / peer tokens/s: {figures['speedup_over_peer']:.2f}x "
              f"(per CPU second: {figures['speedup_over_peer_cpu']:.2f}x)")
    if "speedup_over_peer_compiled" in figures:
        print(f"ours / peer under torch.compile: {figures['speedup_over_peer_compiled']:.2f}x "
              f"({figures['peer_compiled_tokens_per_sec']:,.0f} tokens/s)")
    row = (f"| {figures['config']} | {dtype} | {ours.tokens_per_sec:,.0f} | {figures['mfu']:.1%} | "
           f"{spread(ours.step_seconds)} | {ours.compile_seconds:.1f} s | "
           f"{ours.peak_memory_bytes / mib:,.0f} / {ours.memory_estimate_bytes / mib:,.0f} MiB | "
           f"{figures.get('peer_tokens_per_sec', float('nan')):,.0f} | {figures.get('speedup_over_peer', float('nan')):.2f}x |")
    print("\n" + MARKDOWN_HEADER + "\n" + row)
    if _MARKDOWN.value:
        new = not os.path.exists(_MARKDOWN.value)
        with open(_MARKDOWN.value, "a") as f:
            f.write((MARKDOWN_HEADER + "\n" if new else "") + row + "\n")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
