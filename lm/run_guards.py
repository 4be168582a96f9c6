"""The host-side guards of a training run: stop signals, non-finite steps, divergence.

- `Preemption`: SIGTERM (maintenance, SLURM, Kubernetes) and SIGINT (Ctrl-C) ask the loop to
  finish its step, write a checkpoint and return; a second signal ends the process at once.
- `LossGuard`: reads each step's loss and `skipped` flag one step late (the host never stalls
  the device), stops the run per train.nonfinite, and refuses to checkpoint a diverged state:
  a checkpoint is written only if the mean training loss since the previous checkpoint is
  finite and at most checkpoint.divergence_factor times the best such mean so far (the first
  step's loss, the untrained model's, counts as one) or no worse than the untrained model. So
  a diverged state is never kept as best, never resumed from, and a run never ends "done".
"""

from __future__ import annotations

import math
import signal
import threading
from typing import Callable

import jax
from jax.experimental import multihost_utils

from lm import metrics as metrics_lib
from lm.config import Config
from lm.workdir import RunError

# metrics.jsonl keys written at each checkpoint: a resumed run replays them (`LossGuard.replay`).
INTERVAL_LOSS, UNTRAINED_LOSS = "checkpoint/mean_train_loss", "checkpoint/untrained_loss"


class Preemption:
    """One process: our handler for SIGTERM and SIGINT; the first restores the default action,
    so a second signal ends the process at once (without a traceback).
    Several processes: all must stop after the same step, or the others wait forever in the next
    step's collectives. JAX's preemption service (started by jax.distributed) catches SIGTERM on
    any host and agrees on a step every host reaches; `poll(step)`, called at every step, turns
    true on all hosts at that step."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, log: Callable[[str], None]):
        self.requested = False
        self.signal_name = "a preemption notice"
        self.log = log
        self._previous: dict = {}
        self._multihost = jax.process_count() > 1

    def __enter__(self):
        # Several processes: no handler of ours, as one host stopping alone would leave the others
        # blocked in the next step's collectives; SIGTERM is JAX's there (it agrees on a step).
        if not self._multihost and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        for each in self._previous:  # a second signal of either kind ends the process
            signal.signal(each, signal.SIG_DFL)
        self.log(f"{self.signal_name} received: finishing this step and writing a checkpoint (send it again "
                 f"to exit at once)")

    def poll(self, step: int) -> bool:
        if self._multihost and not self.requested and multihost_utils.reached_preemption_sync_point(step):
            self.requested = True
            self.log(f"preemption notice on a host: every process stops after step {step} and writes its checkpoint")
        return self.requested

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _newest_good(checkpointer) -> str:
    step = checkpointer.latest_step()
    if step is None:
        return "no checkpoint was written yet, so a rerun starts over"
    return f"the newest good checkpoint is step {step} in {checkpointer.directory}"


class LossGuard:
    """Host side of the step's non-finite guard, and the divergence check before each checkpoint."""

    def __init__(self, config: Config, checkpointer, log: Callable[[str], None]):
        self.config, self.checkpointer, self.log = config.train, checkpointer, log
        self.factor = config.checkpoint.divergence_factor
        self.consecutive = self.total = 0
        self.pending = None
        self.untrained = self.best = math.inf  # loss of the first step; best interval mean so far
        self.interval_sum, self.interval_steps, self.interval_start = 0.0, 0, 0

    def replay(self, workdir: str, up_to_step: int) -> None:
        """A resumed run's references, from the checkpoint records it logged."""
        for step, record in sorted(metrics_lib.records(workdir, INTERVAL_LOSS).items()):
            if step <= up_to_step:
                self.best = min(self.best, record[INTERVAL_LOSS])
                self.untrained = record.get(UNTRAINED_LOSS, self.untrained)
        self.interval_start = up_to_step

    def push(self, step, device_metrics):
        if self.pending is not None:
            self.check(*self.pending)
        self.pending = (step, {k: device_metrics[k] for k in ("skipped", "loss", "grad_norm", "param_norm")})

    def flush(self):
        if self.pending is not None:
            self.check(*self.pending)
            self.pending = None

    def check(self, step, device_values):
        values = {k: float(v) for k, v in jax.device_get(device_values).items()}
        if math.isfinite(values["loss"]):
            if not math.isfinite(self.untrained):
                self.untrained = values["loss"]
            self.interval_sum += values["loss"]
            self.interval_steps += 1
        if not values["skipped"]:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        bad = [k for k in ("loss", "grad_norm", "param_norm") if not math.isfinite(values[k])]
        what = f"step {step}: non-finite {', '.join(f'{k}={values[k]}' for k in bad)}; its update was not applied"
        if self.config.nonfinite == "stop" or self.consecutive >= self.config.max_consecutive_nonfinite:
            self.checkpointer.wait()
            reason = ("train.nonfinite=stop" if self.config.nonfinite == "stop" else
                      f"{self.consecutive} non-finite steps in a row (train.max_consecutive_nonfinite="
                      f"{self.config.max_consecutive_nonfinite})")
            newest = _newest_good(self.checkpointer)
            raise RunError(f"{what}. Stopping: {reason}. {newest[0].upper() + newest[1:]}; lower "
                           f"the learning rate or check the data before resuming.")
        self.log(f"WARNING: {what} (skipped; {self.consecutive} in a row, {self.total} in this run; the run stops "
                 f"after {self.config.max_consecutive_nonfinite} in a row)")

    def before_checkpoint(self, step: int) -> dict:
        """Raises RunError if the state at `step` has diverged; else the record to log with its
        checkpoint (what a resumed run replays). Call after `flush`."""
        mean = self.interval_sum / self.interval_steps if self.interval_steps else math.nan
        reference = min(self.best, self.untrained)
        limit = max(self.factor * reference, self.untrained)
        if not math.isfinite(mean) or mean > limit:
            self.checkpointer.wait()
            since = f"steps {self.interval_start + 1}-{step}"
            seen = (f"no finite loss in {since}" if not math.isfinite(mean) else
                    f"the mean training loss over {since} is {mean:.4g}, above {limit:.4g} (checkpoint."
                    f"divergence_factor={self.factor:g} x {reference:.4g}, the lowest of the earlier interval means "
                    f"and the first step's loss, {self.untrained:.4g})")
            raise RunError(f"the run diverged: {seen}. Checkpoint {step} was not written; "
                           f"{_newest_good(self.checkpointer)}. Lower optimizer.learning_rate (or raise "
                           f"optimizer.warmup_steps) and run the same command again.")
        self.best = min(self.best, mean)
        self.interval_sum, self.interval_steps, self.interval_start = 0.0, 0, step
        return {INTERVAL_LOSS: mean, UNTRAINED_LOSS: self.untrained}
