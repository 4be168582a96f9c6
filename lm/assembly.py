"""Assembly: a config becomes a model, an optimizer, a mesh, shardings and compiled steps.

config -> task (data) -> model, optimizer, mesh, shardings -> jitted train and eval steps.

This is the one place where the train and eval steps are compiled (`build_steps`): the run
loop (lm/trainer.py), the planner (tools/plan.py), the benchmarks and quantization all get
their steps from here. Knowledge distillation is a variant of the train step chosen here.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from lm import checkpoint as checkpoint_lib
from lm import config as config_lib
from lm import init_from, models, optimizer, sharding, steps, tasks
from lm.config import Config, ConfigError, ModelConfig


def resolve_model_config(model: ModelConfig, tokenizer_vocab: int) -> ModelConfig:
    if model.vocab_size == 0:
        return dataclasses.replace(model, vocab_size=tokenizer_vocab)
    if model.vocab_size < tokenizer_vocab:
        raise ConfigError(f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's vocabulary "
                          f"({tokenizer_vocab}): set model.vocab_size to at least {tokenizer_vocab}, or 0 to match it")
    return model


def check_batch_layout(config: Config, mesh) -> None:
    """The global batch formula: batch_size = microbatches x (data x fsdp devices) x rows per device."""
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    for name, size in (("train.batch_size", config.train.batch_size // config.train.microbatches),
                       ("eval.batch_size", config.eval.batch_size or config.train.batch_size)):
        if size % data_parallel:
            raise ConfigError(f"{name} (per microbatch: {size}) does not divide over the {data_parallel} "
                              f"data-parallel devices (mesh data x fsdp): use a multiple of {data_parallel}"
                              + (" (on a CPU, tools/train.py --cpu_devices=1 runs on one device)"
                                 if jax.default_backend() == "cpu" else ""))


class Steps(NamedTuple):
    """The model and its compiled, sharded steps on one mesh."""
    model: nn.Module
    state_shardings: Any  # a TrainState of shardings
    abstract_state: Any  # a TrainState of jax.ShapeDtypeStruct (with shardings): orbax's restore target
    init_fn: Any  # () -> a freshly initialised, sharded TrainState
    train_step: Any  # (state, batch) -> (state, metrics); state donated
    eval_step: Any  # (params, batch) -> sums


@dataclasses.dataclass
class Run:
    """Everything the loop needs, built once from the config (before any compilation)."""
    config: Config
    task: tasks.Task  # the objective (device side) and its pipeline (host side)
    model_config: ModelConfig  # config.model with vocab_size resolved
    data: Any  # the pipeline's prepared data (has .tokenizer)
    mesh: jax.sharding.Mesh
    model: nn.Module
    state_shardings: Any
    abstract_state: Any
    init_fn: Any
    train_step: Any
    eval_step: Any


def build(config: Config, log=lambda message: None) -> Run:
    if config.init_from and not config.tokenizer.path:
        # A run started from another's params takes that run's tokenizer: the embeddings mean something
        # only with the pieces they were trained on, and a freshly trained tokenizer of the same size
        # would fit every shape and silently scramble them. One rule for every task.
        found = init_from.check(config)
        config = dataclasses.replace(config, tokenizer=dataclasses.replace(config.tokenizer, path=found.tokenizer_path))
    task = tasks.get(config)
    data = task.pipeline.prepare()
    model_config = resolve_model_config(config.model, data.tokenizer.vocab_size)
    mesh = sharding.make_mesh(config.mesh)
    teacher = None
    if config.distill.teacher_workdir:  # a frozen teacher joins the train step (lm/distill.py)
        from lm import distill  # noqa: PLC0415

        teacher = distill.load_teacher(config, task.objective, data.tokenizer, mesh, log)
    compiled = build_steps(config, model_config, mesh, task.objective, teacher)
    return Run(config, task, model_config, data, mesh, *compiled)


def build_steps(config: Config, model_config: ModelConfig, mesh, objective=None, teacher=None) -> Steps:
    """The model and its jitted, sharded steps for `mesh`; no data and no arrays allocated
    (tools/plan.py compiles `train_step` ahead of time against `abstract_state`). `teacher`
    (lm/pretrained.py's Pretrained) makes the train step a distillation step."""
    check_batch_layout(config, mesh)
    model = models.build(model_config)
    objective = objective if objective is not None else tasks.objective(config)
    # An objective may scale each parameter's updates (fine-tuning: frozen encoder, layer-wise decay).
    tx = optimizer.for_task(config, objective)
    init = lambda: steps.init_state(model, tx, config.train.seed, objective.init_inputs())  # noqa: E731
    boxed = jax.eval_shape(init)
    state_shardings = sharding.logical_shardings(boxed, mesh)
    abstract_state = checkpoint_lib.abstract_with_shardings(nn.meta.unbox(boxed), state_shardings)
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    learning_rate = optimizer.schedule(config.optimizer, config.train.steps)
    dropout, nan_steps = model_config.dropout_rate > 0, config_lib.nan_steps(config.train)
    if teacher is None:
        step_fn = steps.make_train_step(model, objective, tx, learning_rate, config.train.microbatches, dropout,
                                        nan_steps)
        extra_args, extra_shardings = (), ()
    else:
        from lm import distill  # noqa: PLC0415

        step_fn = distill.make_train_step(model, objective, teacher.model, tx, learning_rate, config.distill,
                                          config.train.microbatches, config.train.z_loss, dropout, nan_steps)
        # The teacher's params are a separate, non-donated argument, sharded by the same rules.
        extra_args, extra_shardings = (teacher.params,), (teacher.param_shardings,)
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding, *extra_shardings),
                     out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    train_step = jitted if not extra_args else _Bound(jitted, extra_args)
    eval_step = jax.jit(steps.make_eval_step(model, objective),
                        in_shardings=(state_shardings.params, batch_sharding), out_shardings=replicated)
    # The initialiser runs once, so on a CPU it is compiled for compile time: its threefry draws
    # unroll to ~13k HLO ops, and LLVM's optimisations took half of every launch's 3 s init compile
    # (draws equal to the last bit but for an ulp in a few truncated-normal tails).
    init_options = {"xla_backend_optimization_level": 0} if mesh.devices.flat[0].platform == "cpu" else None
    init_fn = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=state_shardings, compiler_options=init_options)
    return Steps(model, state_shardings, abstract_state, init_fn, train_step, eval_step)


class _Bound:
    """A jitted or compiled step with trailing arguments bound (the distillation step's teacher
    params): called and lowered as (state, batch), like every other train step."""

    def __init__(self, jitted, extra_args: tuple):
        self.jitted, self.extra_args = jitted, extra_args

    def __call__(self, state, batch):
        return self.jitted(state, batch, *self.extra_args)

    def lower(self, state, batch):
        return self.jitted.lower(state, batch, *self.extra_args)


def _abstract(batch):
    return checkpoint_lib.abstract_with_shardings(batch, jax.tree.map(lambda x: x.sharding, batch))


class CompileAhead:
    """The train and eval steps compiling on background threads while the caller restores or
    initialises the state: launch to first evaluation 2-4 s sooner for gpt_speedrun on 2 cores.

    Lowering traces Python, so it runs here, in the caller, one step after the other (threads
    would only take turns with the GIL); XLA's compiler releases the GIL, so the compiles run on
    threads beside the initialiser's. `wait()` joins them and re-raises a compile error in the
    caller and returns the train step to call: the compiled executable (calling the jitted step
    would trace and lower it again, ~0.5 s), or the jitted step when no train batch was given.
    The eval step's executable sits in jax.jit's cache, where its first call finds it. Batches
    are global arrays (or anything with shape, dtype and sharding); None skips that step."""

    def __init__(self, run: Run, train_batch=None, eval_batch=None):
        self.errors: list[BaseException] = []
        self.executables: dict[str, Any] = {}
        lowered = {}
        with sharding.activation_rules(run.mesh):  # the mesh context the loop calls the steps in
            if train_batch is not None:
                lowered["train"] = run.train_step.lower(run.abstract_state, _abstract(train_batch))
            if eval_batch is not None:
                lowered["eval"] = run.eval_step.lower(run.abstract_state.params, _abstract(eval_batch))
        self.jitted_train_step = run.train_step
        self.threads = [threading.Thread(target=self._compile, args=(name, low), daemon=True,
                                         name=f"lm-compile-{name}") for name, low in lowered.items()]
        for thread in self.threads:
            thread.start()

    def _compile(self, name: str, lowered) -> None:
        try:
            self.executables[name] = lowered.compile()
        except BaseException as error:  # noqa: BLE001 (re-raised by wait(), in the caller's thread)
            self.errors.append(error)

    def wait(self):
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
        compiled = self.executables.get("train")
        if compiled is None:
            return self.jitted_train_step
        return _Bound(compiled, getattr(self.jitted_train_step, "extra_args", ()))


def evaluate(run: Run, params, batches=None) -> dict[str, float]:
    """The objective's metrics over the validation split, or over `batches` (for causal LM: loss in
    nats/token, perplexity, bits per byte and accuracy)."""
    totals = None
    if batches is None:
        batches = run.task.pipeline.eval_batches(run.data, jax.process_index(), jax.process_count())
    for batch in batches:
        sums = run.eval_step(params, sharding.to_global(batch, run.mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    # Scalars as floats; an objective may also sum vectors (extractive QA's per-window spans).
    totals = jax.tree.map(lambda x: float(x) if np.ndim(x) == 0 else np.asarray(x), jax.device_get(totals))
    return run.task.objective.eval_metrics(totals)
