"""Measurements behind tools/bench.py: this machine's matmul peak, train-step time and memory.

Everything is measured in the calling process, so MFU is a ratio of two figures taken minutes
apart on the same machine (this CPU is shared and its speed drifts 15-25% between runs; a
peak from a spec sheet or another day would make MFU meaningless). The model FLOPs come from
`lm.planning.flops_per_token`, the one definition every MFU figure in `lm` uses.
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lm import assembly, planning, sharding
from lm.hardware import matmul_cpu_peak, matmul_peak, reset_peak_rss, rss_bytes  # noqa: F401 (tools/bench.py)
from lm.config import Config

MiB = 2 ** 20


def random_batch(config: Config, vocab_size: int, seed: int = 0) -> dict:
    """A packed batch of random tokens with the shapes and dtypes the pipeline produces (one
    document per row). Step time does not depend on token values."""
    shape = (config.train.batch_size, config.data.seq_len)
    tokens = np.random.default_rng(seed).integers(0, vocab_size, (shape[0], shape[1] + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape).copy(),
            "segment_ids": np.ones(shape, np.int32), "weights": np.ones(shape, np.float32),
            "target_bytes": np.ones(shape, np.int32)}


def write_report(table: list[str], figures, json_path: str = "", markdown_path: str = "") -> None:
    """Prints a benchmark's markdown table; writes its figures as JSON and appends the table to a
    markdown file when those paths are given."""
    print("\n".join(table))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(figures, f, indent=2)
    if markdown_path:
        with open(markdown_path, "a") as f:
            f.write("\n".join(table) + "\n")


def load_average() -> float:
    """The machine's 1-minute load average (runnable processes), to say how contended a run was."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def _tree_bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def kept_activation_bytes(model, params, batch) -> int | None:
    """Bytes of the residuals the forward pass keeps for the backward pass under the model's
    remat policy (parameters and inputs excluded), as jax's autodiff saves them."""
    try:  # jax has no public name for this; print_saved_residuals is built on it.
        from jax._src.ad_checkpoint import saved_residuals
    except ImportError:
        return None

    def loss(p):
        logits = model.apply({"params": p}, batch["inputs"], batch["positions"], batch["segment_ids"])
        return jnp.sum(jax.nn.log_softmax(logits) * 0.0)

    residuals = saved_residuals(loss, params)
    return sum(int(np.prod(aval.shape)) * aval.dtype.itemsize
               for aval, source in residuals if not source.startswith("from the argument"))


@dataclasses.dataclass
class StepBenchmark:
    step_seconds: list[float]
    step_cpu_seconds: list[float]  # process CPU time per step: on a shared machine it moves far less than wall time
    compile_seconds: float
    tokens_per_step: int
    flops_per_token: float
    peak_memory_bytes: int  # resident-set high-water mark added by the state and the steps
    memory_parts: dict[str, int]  # params, optimizer state, gradients, kept activations
    compiled_temp_bytes: int  # XLA's own figure for the step's temporaries
    loss: float

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.step_seconds))

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens_per_step / self.median_seconds

    @property
    def model_flops_per_sec(self) -> float:
        return self.flops_per_token * self.tokens_per_sec

    @property
    def memory_estimate_bytes(self) -> int:
        return sum(self.memory_parts.values())


def train_steps(config: Config, num_steps: int, warmup: int = 2, rounds: int = 1,
                between_rounds=None) -> StepBenchmark:
    """Compiles the real train step (lm/assembly.py, same shardings and donation as training),
    runs `warmup` steps, then times `num_steps` steps one by one on a random batch, `rounds`
    times, calling `between_rounds()` after each round (a peer's turn, so the two interleave)."""
    model_config = assembly.resolve_model_config(config.model, config.tokenizer.vocab_size)
    mesh = sharding.make_mesh(config.mesh)
    model, _, abstract_state, init_fn, train_step, _ = assembly.build_steps(config, model_config, mesh)
    host_batch = random_batch(config, model_config.vocab_size)
    with sharding.activation_rules(mesh):
        batch = sharding.to_global(host_batch, mesh)
        started = time.perf_counter()
        compiled = train_step.lower(abstract_state, batch).compile()
        compile_seconds = time.perf_counter() - started
        memory = compiled.memory_analysis()
        baseline = rss_bytes("VmRSS")
        reset_peak_rss()  # compiling is not training
        state = init_fn()
        parts = {"params": _tree_bytes(state.params), "optimizer_state": _tree_bytes(state.opt_state),
                 "gradients": _tree_bytes(state.params)}
        kept = kept_activation_bytes(model, state.params, batch)
        if kept is not None:
            parts["kept_activations"] = kept
        for _ in range(warmup):
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
        times, cpu_times = [], []
        for _ in range(rounds):
            for _ in range(num_steps):
                started, cpu_started = time.perf_counter(), time.process_time()
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - started)
                cpu_times.append(time.process_time() - cpu_started)
            if between_rounds is not None:
                between_rounds()
        peak = rss_bytes("VmHWM") - baseline
    tokens = config.train.batch_size * config.data.seq_len
    return StepBenchmark(times, cpu_times, compile_seconds, tokens, planning.flops_per_token(model_config, config.data.seq_len),
                         int(peak), parts, int(getattr(memory, "temp_size_in_bytes", 0) or 0),
                         float(metrics["loss"]))


def input_pipeline(config: Config, seconds: float = 5.0) -> dict:
    """Tokens/s the data pipelines deliver on their own: the pre-pass path's (tokenized once, then
    packed, shuffled batches) and the streaming path's (cleaning, tokenizing and packing as it
    goes), in-process and with 2 grain worker processes. The first batch (start-up) is excluded."""
    from lm.data import pipeline
    from lm.tasks import causal_lm

    corpus = pipeline.prepare(config.data, config.tokenizer)
    batches = pipeline.train_iterator(corpus, config.data.seq_len, config.train.batch_size, config.data.seed,
                                      prefetch=config.data.prefetch)
    tokens_per_sec, count = _input_throughput(batches, config, seconds)
    figures = {"input_tokens_per_sec": tokens_per_sec, "input_batches": count}
    for workers in (0, 2):
        data = dataclasses.replace(config.data, streaming=True, num_workers=workers)
        streamed = causal_lm.CausalLMPipeline(dataclasses.replace(config, data=data))
        figures[f"streaming_tokens_per_sec_workers_{workers}"] = _input_throughput(
            streamed.train_iterator(streamed.prepare()), config, seconds)[0]
    return figures


def _input_throughput(batches, config: Config, seconds: float) -> tuple[float, int]:
    next(batches)  # thread or worker start-up is not throughput
    count, started = 0, time.perf_counter()
    for _ in batches:
        count += 1
        if time.perf_counter() - started > seconds:
            break
    return count * config.train.batch_size * config.data.seq_len / (time.perf_counter() - started), count
