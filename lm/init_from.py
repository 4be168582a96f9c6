"""Starting a run from another run's parameters (`init_from`): fine-tuning a pretrained model.

Only the params are taken; the optimizer state and the step start fresh, and the fine-tuning
run's own checkpoints take over on resume. The model shapes must match the pretrained run's
(a config built on the same model config, e.g. configs/finetune_multi30k.py on t5_tiny).
"""

from __future__ import annotations

import os

import jax

from lm.config import ConfigError


def resolve(path: str) -> tuple[str, int]:
    """(workdir, step) for a workdir (step 0: its newest checkpoint) or a checkpoint directory
    <workdir>/checkpoints/<step>."""
    from lm import pretrained  # noqa: PLC0415 (pretrained imports the task registry)

    workdir, step = pretrained.split_checkpoint_path(os.path.abspath(path))
    if not os.path.isdir(workdir):
        raise ConfigError(f"init_from={path!r} does not exist: give a trained workdir or <workdir>/checkpoints/<step>")
    return workdir, step


def load_params(path: str, abstract_params, param_shardings, log=lambda message: None):
    """The pretrained params, checked against this run's parameter shapes and placed with its shardings."""
    from lm import pretrained  # noqa: PLC0415 (pretrained imports the task registry)

    workdir, step = resolve(path)
    source = pretrained.load(workdir, step)
    want = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    have = dict((jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(source.params)[0])
    for key_path, leaf in want:
        name = jax.tree_util.keystr(key_path)
        if name not in have or have[name].shape != leaf.shape:
            found = "missing" if name not in have else f"shape {have[name].shape}"
            raise ConfigError(f"init_from={path!r}: parameter {name} is {found} there but {leaf.shape} here; the "
                              f"model config must match the pretrained run's ({workdir}/config.json)")
    if len(have) != len(want):
        raise ConfigError(f"init_from={path!r} has {len(have)} parameter arrays, this model {len(want)}: "
                          f"the model config must match the pretrained run's ({workdir}/config.json)")
    log(f"init_from: params of {workdir} step {source.step}")
    return jax.device_put(source.params, param_shardings)
