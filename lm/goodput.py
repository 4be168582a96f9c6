"""Where a run's wall time goes, and how much of the hardware its steps use.

Goodput is the share of the wall time spent in train steps. The rest is badput, in parts:
setup (building the run, preparing data, restoring or initialising the state), compile (every
XLA compilation, wherever it happened: the train and eval steps, the sampler), data wait (the
host waiting for the next batch), eval (evaluation, the end-of-run report and sample) and
checkpoint (saving, and waiting for background saves). The loop times each part as an
exclusive span of wall time (`Timeline.part`); compilation is taken out of the span it happened
in, as jax reports it, up to the span's length (the train and eval steps compile on threads
while the state initialises, lm/assembly.py's CompileAhead: overlapped seconds count once). So
the parts add up to the wall time, less the loop's own bookkeeping.

Time in "train_step" is the host's time dispatching steps and waiting for their results: with
asynchronous dispatch the device works while the host reads the next batch, so a data wait the
device did not notice still counts as data wait here (the conservative reading).

MFU (model FLOPs utilisation) is model FLOPs per second (lm.planning.flops_per_token, the one
definition in `lm`) over the hardware's peak: the chip's datasheet figure times the number of
chips on a GPU or TPU (lm/hardware.py), and on a CPU this machine's matmul peak measured at the
start of the run, as tools/bench.py measures it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time

import jax

from lm import hardware

PARTS = ("setup", "compile", "data_wait", "train_step", "eval", "checkpoint")
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = 0.0  # every compilation in this process since the listener was registered
_listening = False
_lock = threading.Lock()


def _on_duration(event: str, duration: float, **kwargs) -> None:
    del kwargs
    global _compile_seconds
    if event in _COMPILE_EVENTS:
        with _lock:  # compiles report from background threads too
            _compile_seconds += duration


def _listen() -> None:
    global _listening
    if not _listening:  # one listener for the process: runs may follow each other (tests, sweeps)
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True


class Timeline:
    """Seconds per part of the run since it started; `part(name)` times one span."""

    def __init__(self, clock=time.perf_counter):
        _listen()
        self.clock = clock
        self.started = clock()
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.open = None  # (part, started, compile seconds then) of the span being timed now

    @contextlib.contextmanager
    def part(self, name: str):
        self.open = (name, self.clock(), _compile_seconds)
        try:
            yield
        finally:
            self.seconds = self._with_open_span()
            self.open = None

    def _with_open_span(self) -> dict[str, float]:
        """The parts' seconds with the open span counted up to now: a record written from inside
        a span (the progress line is written inside a train step's) still adds up to the wall."""
        seconds = dict(self.seconds)
        if self.open is not None:
            name, started, compiled_before = self.open
            # Compiles on other threads (lm/assembly.py's CompileAhead) overlap the span: they count as
            # compile up to its length, so the parts still add up to the wall time.
            elapsed = self.clock() - started
            compiled = min(_compile_seconds - compiled_before, elapsed)
            seconds[name] += elapsed - compiled
            seconds["compile"] += compiled
        return seconds

    def wall_seconds(self) -> float:
        return self.clock() - self.started

    def record(self) -> dict[str, float]:
        """{"train/goodput", "time/wall", "time/<part>" for each part} so far."""
        wall, parts = self.wall_seconds(), self._with_open_span()
        return {"train/goodput": parts["train_step"] / max(wall, 1e-9), "time/wall": wall,
                **{f"time/{name}": seconds for name, seconds in parts.items()}}

    def breakdown(self) -> str:
        """The step-time breakdown printed at the end of a run: one line per part."""
        wall = self.wall_seconds()
        lines = [f"where the {wall:.1f} s went (goodput {self.seconds['train_step'] / max(wall, 1e-9):.1%}):"]
        other = wall - sum(self.seconds.values())
        for name, seconds in [*self.seconds.items(), ("other", other)]:
            lines.append(f"  {name.replace('_', ' '):<11} {seconds:>9.1f} s  {seconds / max(wall, 1e-9):>6.1%}")
        return "\n".join(lines)


@functools.cache  # once per process and dtype: tests and sweeps train many runs in one process
def peak_flops(dtype: str) -> float:
    """The hardware's peak FLOP/s for matmuls in `dtype` over all devices: MFU's denominator.
    On a CPU, measured now (a large jitted matmul, tools/bench.py's reading): a datasheet figure
    for a shared CPU would be meaningless."""
    if jax.default_backend() == "cpu":
        return hardware.matmul_peak(dtype)  # bench's reading (< 1 s on 2 cores): train/mfu and bench's MFU agree
    try:
        return hardware.peak_flops(hardware.chip_name(), dtype) * jax.device_count()
    except ValueError:  # a chip lm/hardware.py has no row for: MFU is unknown, training goes on
        return float("nan")
