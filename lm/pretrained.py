"""A trained run as a ready model: its resolved config, tokenizer, model and verified params.

Generation, evaluation, quantization, export, `init_from` and distillation teachers all read
a trained workdir here. Which checkpoint: `which` as lm/workdir.py's `resolve` takes it (best
by default). Only the params are restored (no optimizer state, no data, no task), verified
against the checkpoint's checksums, onto `mesh` with the training's logical sharding rules (a
checkpoint saved on one mesh loads onto another).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from lm import checkpoint as checkpoint_lib
from lm import models, sharding, steps, tasks
from lm import workdir as workdir_lib
from lm.config import Config, ConfigError, MeshConfig
from lm.data.tokenizer import Tokenizer


@dataclasses.dataclass
class Pretrained:
    workdir: str
    step: int
    config: Config  # as trained, with model.vocab_size resolved
    tokenizer: Tokenizer | None
    model: nn.Module
    params: object  # pytree of jax.Arrays, sharded by `param_shardings`
    param_shardings: object


def abstract_params(config: Config, mesh):
    """(model, abstract params with shardings, their shardings): the shapes `config`'s model
    initialises to, with the objective's inputs and no optimizer."""
    model = models.build(config.model)
    boxed = jax.eval_shape(lambda: steps.init_params(model, config.train.seed, tasks.objective(config).init_inputs()))
    shardings = sharding.logical_shardings(boxed, mesh)
    return model, checkpoint_lib.abstract_with_shardings(nn.meta.unbox(boxed), shardings), shardings


def load(path: str, which: str | int = "best", mesh=None, log=lambda message: None,
         require_tokenizer: bool = True) -> Pretrained:
    """The run at `path` (a workdir, or one of its checkpoints: WORKDIR/checkpoints/STEP) with
    the params of its checkpoint `which`, on `mesh` (default: all local devices, data
    parallel, i.e. params replicated). `require_tokenizer=False` (weights-only uses) accepts a
    workdir without one; its `tokenizer` is then None."""
    workdir, step = workdir_lib.resolve(path, which)
    config = workdir_lib.read_config(workdir, require_tokenizer)
    tokenizer = Tokenizer.load(config.tokenizer.path) if config.tokenizer.path else None
    model, params, param_shardings = restore_params(workdir, config, step, mesh, log)
    return Pretrained(workdir, step, config, tokenizer, model, params, param_shardings)


def restore_params(workdir: str, config: Config, step: int, mesh=None, log=lambda message: None):
    """(model, params, param shardings) of checkpoint `step` of `workdir`, whose config is `config`."""
    if config.model.vocab_size == 0:
        raise ConfigError(f"{workdir}/config.json has model.vocab_size=0: it was not written by lm/trainer.py")
    mesh = mesh if mesh is not None else sharding.make_mesh(MeshConfig())
    model, abstract, param_shardings = abstract_params(config, mesh)
    checkpointer = checkpoint_lib.Checkpointer(f"{workdir}/{workdir_lib.CHECKPOINTS}", config.checkpoint, log,
                                               read_only=True)
    try:
        params = checkpointer.restore_params(step, abstract)
    finally:
        checkpointer.close()
    return model, params, param_shardings
