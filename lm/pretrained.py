"""A trained workdir as a ready model: its resolved config, tokenizer, model and verified params.

Generation, quantization and distillation (as the teacher) all start from a workdir written by
lm/trainer.py: `config.json`, `tokenizer.model` and orbax checkpoints. Params are restored
through lm/checkpoint.py, so their checksums are verified, onto `mesh` with the same logical
sharding rules as training (a checkpoint saved on one mesh loads onto another).
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax

from lm import checkpoint as checkpoint_lib
from lm import config as config_lib
from lm import models, optimizer, sharding, steps, tasks
from lm.config import Config, ConfigError, MeshConfig
from lm.data.tokenizer import Tokenizer


@dataclasses.dataclass
class Pretrained:
    workdir: str
    step: int
    config: Config  # as trained, with model.vocab_size resolved
    tokenizer: Tokenizer
    model: nn.Module
    params: object  # pytree of jax.Arrays, sharded by `param_shardings`
    param_shardings: object


def read_config(workdir: str, require_tokenizer: bool = True) -> Config:
    """The workdir's config.json, its tokenizer path pointing at the workdir's own copy.
    `require_tokenizer=False` (weights-only uses such as export) accepts a workdir without one."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{workdir!r} has no config.json: give the --workdir of a run trained with tools/train.py")
    with open(path) as f:
        values = json.load(f)
    # The workdir carries its own tokenizer; the path it was trained from may be gone.
    tokenizer_path = os.path.join(workdir, "tokenizer.model")
    if not os.path.exists(tokenizer_path):
        if require_tokenizer:
            raise ConfigError(
                f"{workdir!r} has no tokenizer.model. A workdir converted from Hugging Face needs a sentencepiece "
                f"model whose ids match the checkpoint's vocabulary: copy one to {tokenizer_path}, or convert again "
                f"into a new workdir with `tools/convert.py --from_hf=HF_DIR --workdir=NEW_DIR --tokenizer=PATH.model`")
        tokenizer_path = ""
    values.setdefault("tokenizer", {})["path"] = tokenizer_path
    return config_lib.from_config_dict(values)


def abstract_params(config: Config, mesh):
    """(model, abstract params with shardings, param shardings, abstract train state)."""
    model, task = models.build(config.model), tasks.get(config)
    tx = optimizer.for_task(config, task)
    boxed = jax.eval_shape(lambda: steps.init_state(model, tx, config.train.seed, task.init_inputs()))
    shardings = sharding.logical_shardings(boxed, mesh)
    abstract_state = checkpoint_lib.abstract_with_shardings(nn.meta.unbox(boxed), shardings)
    return model, shardings.params, abstract_state


def split_checkpoint_path(path: str, step: int = 0) -> tuple[str, int]:
    """(workdir, step) from a workdir or from one checkpoint's directory (WORKDIR/checkpoints/STEP)."""
    path = os.path.normpath(path)
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        if step and step != int(name):
            raise ConfigError(f"{path} is checkpoint {name}, but step {step} was asked for: give one of the two")
        return os.path.dirname(parent), int(name)
    return path, step


def load(workdir: str, step: int = 0, mesh=None, log=lambda message: None) -> Pretrained:
    """The params of checkpoint `step` (0: the newest) of `workdir`, on `mesh` (default: all
    local devices, data parallel, i.e. params replicated). `workdir` may also name one of its
    checkpoints, WORKDIR/checkpoints/STEP."""
    workdir, step = split_checkpoint_path(workdir, step)
    config = read_config(workdir)
    tokenizer = Tokenizer.load(config.tokenizer.path)
    step, model, params, param_shardings = restore_params(workdir, config, step, mesh, log)
    return Pretrained(workdir, step, config, tokenizer, model, params, param_shardings)


def restore_params(workdir: str, config: Config, step: int = 0, mesh=None, log=lambda message: None):
    """(step, model, params, param shardings) of checkpoint `step` (0: the newest) of `workdir`."""
    if config.model.vocab_size == 0:
        raise ConfigError(f"{workdir}/config.json has model.vocab_size=0: it was not written by lm/trainer.py")
    mesh = mesh if mesh is not None else sharding.make_mesh(MeshConfig())
    model, param_shardings, abstract_state = abstract_params(config, mesh)
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise ConfigError(f"{workdir!r} has no checkpoints/ directory: train it first with tools/train.py")
    checkpointer = checkpoint_lib.Checkpointer(directory, config.checkpoint, log, read_only=True)
    try:
        available = checkpointer.all_steps()
        if not available:
            raise ConfigError(f"{directory} holds no checkpoint: train first with tools/train.py")
        step = step or available[-1]
        if step not in available:
            raise ConfigError(f"{directory} has no checkpoint {step}; it has steps {available}")
        state, _ = checkpointer.restore(step, abstract_state, with_data=False)
    finally:
        checkpointer.close()
    return step, model, state.params, param_shardings
