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


def load_params(path: str, abstract_params, param_shardings, log=lambda message: None, model_config=None):
    """The pretrained params, checked against this run's parameter shapes (and, given this run's
    `model_config`, the settings that change the function without changing a shape) and placed
    with its shardings."""
    from lm import pretrained  # noqa: PLC0415 (pretrained imports the task registry)

    workdir, step = resolve(path)
    source = pretrained.load(workdir, step)
    theirs = source.config.model.scale_decoder_outputs
    if model_config is not None and model_config.scale_decoder_outputs != theirs:
        raise ConfigError(f"init_from={path!r} was trained with model.scale_decoder_outputs={theirs}, this run has "
                          f"{model_config.scale_decoder_outputs}: set it as the pretrained run did "
                          f"({workdir}/config.json), or every logit is off by a factor of sqrt(embed_dim)")
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


def shrink_and_perturb(pretrained_params, fresh_params, shrink: float, perturb: float, log=lambda message: None):
    """shrink * pretrained + perturb * fresh for every matrix (ndim >= 2, what weight decay reaches);
    vectors (norm scales, biases) stay as trained.

    Why: a small model warm-started from pretraining can lose to the same model from scratch
    because its trained weights are large and sharp, so fine-tuning's updates move them
    little (Ash & Adams, 2020, "On warm-starting neural network training"). Shrinking keeps
    their directions and restores room to learn; the fresh-init noise restores gradient
    diversity. docs/t5.md measures it on Multi30k."""
    if shrink == 1.0 and perturb == 0.0:
        return pretrained_params
    log(f"init_from: shrink and perturb, {shrink} x pretrained + {perturb} x fresh init for every matrix")
    return jax.tree.map(lambda p, f: shrink * p + perturb * f if p.ndim >= 2 else p, pretrained_params, fresh_params)
