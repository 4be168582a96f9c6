"""Start a run from part of another run's checkpoint: `init_from` (a workdir, its checkpoints
folder, or one step folder) gives the parameters of one subtree (BERT's `encoder`); the rest
(for fine-tuning: the classifier head) keeps its fresh initialisation.

The checkpoint is restored into the other run's own state shapes (rebuilt from its
config.json), verified against its fingerprint, and every leaf is checked against this model's
shape before anything is replaced; a mismatch names the parameter and both shapes.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable

import jax
import numpy as np

from lm import checkpoint as checkpoint_lib
from lm import sharding
from lm.config import CheckpointConfig, ConfigError, MeshConfig


def _best_step(workdir: str, steps: list[int]) -> int | None:
    """The checkpointed step with the lowest eval/loss in the workdir's metrics.jsonl."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    losses = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "eval/loss" in record and record["step"] in steps and math.isfinite(record["eval/loss"]):
                losses[record["step"]] = record["eval/loss"]
    return min(losses, key=losses.get) if losses else None


def resolve(path: str, which: str = "best") -> tuple[str, int]:
    """(checkpoints directory, step) for a workdir, a checkpoints folder or a step folder.
    `which`: "best" (lowest validation loss among the kept checkpoints; newest if unknown) or "latest"."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise ConfigError(f"init_from={path!r} does not exist: give a pretraining workdir or one of its checkpoints")
    name = os.path.basename(path.rstrip("/"))
    if name.isdigit() and os.path.isdir(os.path.join(path, "state")):
        return os.path.dirname(path), int(name)
    directory = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit())
    if not steps:
        raise ConfigError(f"init_from={path!r} holds no checkpoints: give a workdir that has trained")
    best = _best_step(os.path.dirname(directory), steps) if which == "best" else None
    return directory, best if best is not None else steps[-1]


def _abstract_state(workdir: str):
    """The pretraining run's TrainState shapes, rebuilt from its config.json (its model,
    optimizer and task) the way every loader of a workdir does: the restore target."""
    from lm import pretrained  # noqa: PLC0415 (pretrained imports the task registry)

    config = pretrained.read_config(workdir, require_tokenizer=False)
    return pretrained.abstract_params(config, sharding.make_mesh(MeshConfig()))[2]


def read_params(path: str, which: str = "best", log: Callable[[str], None] = print):
    """The saved parameter tree (numpy arrays) of the checkpoint `path` points to, verified
    against its fingerprint; and the checkpoints directory and step it came from."""
    directory, step = resolve(path, which)
    abstract = _abstract_state(os.path.dirname(directory))
    checkpointer = checkpoint_lib.Checkpointer(directory, CheckpointConfig(keep_best=False, async_save=False), log)
    try:
        state, _ = checkpointer.restore(step, abstract, with_data=False)
    finally:
        checkpointer.close()
    return jax.tree.map(np.asarray, state.params), directory, step


def replace_subtree(params, pretrained, subtree: str):
    """`params` with `params[subtree]` taken from `pretrained[subtree]`, shapes checked leaf by leaf
    (ConfigError naming the parameter and both shapes); arrays keep `params`' shardings."""
    if subtree not in pretrained:
        raise ConfigError(f"the init_from checkpoint has no '{subtree}' parameters (it has {sorted(pretrained)}): "
                          f"point init_from at a run of the same model family")
    ours = jax.tree_util.tree_flatten_with_path(params[subtree])[0]
    theirs = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(pretrained[subtree])[0]}
    missing = [jax.tree_util.keystr(p) for p, _ in ours if jax.tree_util.keystr(p) not in theirs]
    extra = sorted(set(theirs) - {jax.tree_util.keystr(p) for p, _ in ours})
    if missing or extra:
        raise ConfigError(f"the init_from encoder does not match this model: missing {missing[:3]}, unexpected "
                          f"{extra[:3]}; give model.num_layers and the other shapes of the pretraining run")
    for path, leaf in ours:
        key = jax.tree_util.keystr(path)
        if tuple(theirs[key].shape) != tuple(leaf.shape):
            raise ConfigError(f"init_from: parameter {subtree}{key} has shape {tuple(theirs[key].shape)} in the "
                              f"checkpoint but {tuple(leaf.shape)} in this model: use the pretraining run's model "
                              f"shapes and its tokenizer (vocabulary size)")
    restored = jax.tree_util.tree_map_with_path(
        lambda p, leaf: jax.device_put(theirs[jax.tree_util.keystr(p)].astype(leaf.dtype), leaf.sharding),
        params[subtree])
    return {**params, subtree: restored}


def load_subtree(state, path: str, subtree: str, which: str = "best", log: Callable[[str], None] = print):
    """`state` (a TrainState) with its `subtree` parameters from the checkpoint at `path`."""
    pretrained, directory, step = read_params(path, which, log)
    params = replace_subtree(state.params, pretrained, subtree)
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(params[subtree]))
    log(f"init_from: {count:,} '{subtree}' parameters from step {step} of {directory}; the rest freshly initialised")
    return state.replace(params=params)
