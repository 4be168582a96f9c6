"""Where a train step's time goes: a jax.profiler trace of the real step, summed by XLA op.

  python tools/profile_step.py --config=configs/bench_cpu.py [--config.model.x=y ...] --steps=3 [--top=25]

Compiles the step exactly as tools/bench.py does (lm/assembly.py's shardings and donation),
traces `--steps` steps after warm-up, and prints thread time per XLA:CPU thunk name and per
kind (matmul libraries, fusions, copies), plus process CPU time per step, which moves far
less than wall time on a shared machine. The trace stays in --trace_dir for Perfetto.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import collections  # noqa: E402
import glob  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from diagnostics import benchmark  # noqa: E402
from lm import assembly, cli, sharding  # noqa: E402

_CONFIG = cli.define_config_flag("configs/bench_cpu.py")
_STEPS = flags.DEFINE_integer("steps", 3, "Traced train steps (after one warm-up step).")
_TOP = flags.DEFINE_integer("top", 25, "Op names to list.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "", "Where the trace goes (default: a temporary directory).")


def summarize(trace_dir: str) -> tuple[dict, dict, float]:
    """Sums complete events ('X') by name and by kind over every thread of the trace."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    by_name, by_kind = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("ph") != "X" or "dur" not in event:
            continue
        name = event["name"]
        if name.startswith(("PjitFunction", "PjRt", "TfrtCpu", "Thunk", "$")) or "Execute" in name:
            continue  # wrappers whose time is the thunks inside them
        by_name[name] += event["dur"] / 1e6
        by_kind[re.sub(r"[.\d]+$", "", name)] += event["dur"] / 1e6
    return by_name, by_kind, sum(by_name.values())


def main(argv):
    del argv
    import jax

    config = cli.load(_CONFIG)
    model_config = assembly.resolve_model_config(config.model, config.tokenizer.vocab_size)
    mesh = sharding.make_mesh(config.mesh)
    _, _, abstract_state, init_fn, train_step, _ = assembly.build_steps(config, model_config, mesh)
    with sharding.activation_rules(mesh):
        batch = sharding.to_global(benchmark.random_batch(config, model_config.vocab_size), mesh)
        compiled = train_step.lower(abstract_state, batch).compile()
        state = init_fn()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="lm_trace_")
        os.makedirs(trace_dir, exist_ok=True)
        with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:  # to look the fusions' names up
            f.write(compiled.as_text())
        cpu, wall = time.process_time(), time.perf_counter()
        jax.profiler.start_trace(trace_dir)
        for _ in range(_STEPS.value):
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        cpu, wall = (time.process_time() - cpu) / _STEPS.value, (time.perf_counter() - wall) / _STEPS.value
    by_name, by_kind, total = summarize(trace_dir)
    steps = _STEPS.value
    print(f"per step: wall {wall:.3f} s, process CPU {cpu:.3f} s, traced op time {total / steps:.3f} s")
    print("\nby kind (thread seconds per step, share):")
    for kind, seconds in by_kind.most_common(15):
        print(f"  {seconds / steps:8.3f}  {seconds / total:6.1%}  {kind}")
    print(f"\ntop {_TOP.value} ops:")
    for name, seconds in by_name.most_common(_TOP.value):
        print(f"  {seconds / steps:8.3f}  {seconds / total:6.1%}  {name}")
    print(f"\ntrace: {trace_dir} (optimised HLO of the step: {trace_dir}/step.hlo.txt)")


if __name__ == "__main__":
    cli.run(main)
