"""A jax.profiler trace of a few steps inside a training run (profile.start_step, num_steps).

The trace goes to <workdir>/profile/plugins/profile/<time>/: an .xplane.pb that TensorBoard's
profile plugin reads (`tensorboard --logdir <workdir>/profile`) and perfetto_trace.json.gz for
ui.perfetto.dev. Each traced train step is annotated with jax.profiler.StepTraceAnnotation
("train", step_num=N), which the profile plugin uses as its step markers. The trace starts
just before the first requested step is dispatched and stops once the last one has finished on
the device, so it holds exactly the requested steps (and the data wait between them).
A workdir on an object store gets the trace copied there once it stops (it is written locally:
the profiler's own writer reaches gs:// only through TensorFlow's file system).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile

import jax

from lm import storage
from lm.config import ProfileConfig


class TraceWindow:
    def __init__(self, config: ProfileConfig, workdir: str, log=print):
        self.first = config.start_step  # 0: no trace
        self.last = config.start_step + config.num_steps - 1
        self.directory = storage.join(workdir, "profile")
        self._staging = tempfile.mkdtemp(prefix="lm-profile-") if storage.is_remote(workdir) and self.first else None
        self.log = log
        self.active = False

    @contextlib.contextmanager
    def step(self, step: int):
        """Around the dispatch of train step `step` (1-based, as logged)."""
        if self.first and step == self.first and jax.process_index() == 0:
            jax.profiler.start_trace(self._staging or self.directory, create_perfetto_trace=True)
            self.active = True
        if not self.active:
            yield
            return
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            yield

    def after_step(self, step: int, outputs) -> None:
        """Stops the trace once step `last` has run (waits for `outputs` of that step)."""
        if self.active and step >= self.last:
            self.stop(outputs)

    def stop(self, outputs=None) -> None:
        if not self.active:
            return
        jax.block_until_ready(outputs)
        jax.profiler.stop_trace()
        self.active = False
        if self._staging:
            storage.copy_tree(self._staging, self.directory)
            shutil.rmtree(self._staging, ignore_errors=True)
        self.log(f"profile: steps {self.first}-{self.last} traced to {self.directory} "
                 f"(tensorboard --logdir {self.directory}, or perfetto_trace.json.gz at ui.perfetto.dev)")
