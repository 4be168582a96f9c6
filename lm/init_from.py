"""`init_from`: start a run from another run's parameters (fine-tuning, warm starts), one path
for every family.

- `source(path)` finds the run and its checkpoint through lm/workdir.py's `resolve`, the one
  rule every reader of a trained run uses (`finetune.init_checkpoint`: best, or latest).
- `check_compatible` compares its config.json with this run's before any data is read or
  anything compiles: the settings that change what the params compute without changing a
  shape (casing of the text the tokenizer saw, the decoder's output scaling) and the family.
- `restore` reads its params into the source run's own shapes (rebuilt from its config.json,
  verified against the checkpoint's fingerprint), checks every leaf against this model's
  shape (an error names the parameter and both shapes), and replaces the task's subtree
  (BERT fine-tuning: `encoder`; the head stays fresh), every param but a fresh head (a GPT or
  T5 classifier; a T5's decoder is left behind), or every param (seq2seq fine-tuning).
  Matrices may then be shrunk and perturbed (`finetune.init_shrink`, `finetune.init_perturb`).

Only params are taken: the optimizer state and the step start fresh, and the new run's own
checkpoints take over on resume.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import numpy as np

from lm import optimizer, storage
from lm import workdir as workdir_lib
from lm.config import Config, ConfigError

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Source:
    workdir: str
    step: int
    config: Config  # the source run's config.json (tokenizer path: its own copy, if it has one)

    @property
    def tokenizer_path(self) -> str:
        path = storage.join(self.workdir, workdir_lib.TOKENIZER)
        if not storage.exists(path):
            raise ConfigError(f"init_from: {self.workdir} has no tokenizer.model; its params only mean something with "
                              f"the tokenizer they were trained with: copy it there (tools/convert.py --tokenizer)")
        return path


def source(path: str, which: str = "best") -> Source:
    """The run and checkpoint `path` names: a workdir (its checkpoint `which`: best or latest,
    lm/workdir.py's `resolve`), its checkpoints folder, or one step folder (that step)."""
    if not storage.isdir(path):
        raise ConfigError(f"init_from={path!r} does not exist: give a trained workdir or one of its checkpoints")
    try:
        workdir, step = workdir_lib.resolve(path, which)
    except ConfigError as error:
        raise ConfigError(f"init_from: {error}") from None
    return Source(workdir, step, workdir_lib.read_config(workdir, require_tokenizer=False))


def check_compatible(theirs: Config, ours: Config, where: str) -> None:
    """Refuses what no param shape would catch. `where` names the source run in the errors."""
    fix = f"set it as the pretrained run did ({where}/config.json)"
    if theirs.model.family != ours.model.family:
        raise ConfigError(f"init_from: {where} is a model.family={theirs.model.family} run, this run is "
                          f"{ours.model.family}: point init_from at a run of the same family")
    if theirs.data.lowercase != ours.data.lowercase:
        raise ConfigError(f"init_from: {where} was trained with data.lowercase={theirs.data.lowercase}, this run has "
                          f"{ours.data.lowercase}: {fix} (--config.data.lowercase={theirs.data.lowercase}), so the text "
                          f"is cased as the text its tokenizer and embeddings saw")
    if theirs.model.scale_decoder_outputs != ours.model.scale_decoder_outputs:
        raise ConfigError(f"init_from: {where} was trained with model.scale_decoder_outputs="
                          f"{theirs.model.scale_decoder_outputs}, this run has {ours.model.scale_decoder_outputs}: "
                          f"{fix}, or every logit is off by a factor of sqrt(embed_dim)")


def check(config: Config) -> Source:
    """The source of `config.init_from`, checked against `config` (cheap: reads JSON only)."""
    found = source(config.init_from, config.finetune.init_checkpoint)
    check_compatible(found.config, config, found.workdir)
    return found


def read_params(found: Source, log: Log = print):
    """The source checkpoint's params as numpy arrays, restored into its own shapes and verified."""
    from lm import pretrained  # noqa: PLC0415 (pretrained imports the model families)

    _, params, _ = pretrained.restore_params(found.workdir, found.config, found.step, log=log)
    return jax.tree.map(np.asarray, params)


def subtree_of(params, subtree: str):
    if subtree not in params:
        raise ConfigError(f"the init_from checkpoint has no '{subtree}' parameters (it has {sorted(params)}): "
                          f"point init_from at a run of the same model family")
    return params[subtree]


def replace_params(ours, theirs, prefix: str = ""):
    """`theirs` placed like `ours` (same dtypes and shardings), after checking leaf by leaf that
    the two trees match (ConfigError naming the parameter, `prefix` first, and both shapes)."""
    flat_ours = jax.tree_util.tree_flatten_with_path(ours)[0]
    flat_theirs = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(theirs)[0]}
    names = {jax.tree_util.keystr(p) for p, _ in flat_ours}
    missing, extra = sorted(names - set(flat_theirs)), sorted(set(flat_theirs) - names)
    if missing or extra:
        raise ConfigError(f"init_from: the checkpoint's params do not match this model: missing {missing[:3]}, "
                          f"unexpected {extra[:3]}; give model.num_layers and the other shapes of the pretrained run")
    for path, leaf in flat_ours:
        key = jax.tree_util.keystr(path)
        if tuple(flat_theirs[key].shape) != tuple(leaf.shape):
            raise ConfigError(f"init_from: parameter {prefix}{key} has shape {tuple(flat_theirs[key].shape)} in the "
                              f"checkpoint but {tuple(leaf.shape)} in this model: use the pretrained run's model "
                              f"shapes and its tokenizer (vocabulary size)")
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: jax.device_put(np.asarray(flat_theirs[jax.tree_util.keystr(p)]).astype(leaf.dtype),
                                       leaf.sharding), ours)


def shrink_and_perturb(pretrained_params, fresh_params, shrink: float, perturb: float, log: Log = lambda m: None):
    """shrink * pretrained + perturb * fresh for every matrix and embedding (what weight decay
    reaches, `optimizer.is_weight`); norm scales and biases stay as trained.

    Why: a small model warm-started from pretraining can lose to the same model from scratch
    because its trained weights are large and sharp, so fine-tuning's updates move them
    little (Ash & Adams, 2020, "On warm-starting neural network training"). Shrinking keeps
    their directions and restores room to learn; the fresh-init noise restores gradient
    diversity. docs/t5.md measures it on Multi30k."""
    if shrink == 1.0 and perturb == 0.0:
        return pretrained_params
    log(f"init_from: shrink and perturb, {shrink} x pretrained + {perturb} x fresh init for every matrix")
    return jax.tree_util.tree_map_with_path(
        lambda path, p, f: shrink * p + perturb * f if optimizer.is_weight(path, p) else p,
        pretrained_params, fresh_params)


def restore(state, config: Config, subtree: str | None = None, log: Log = print, new: tuple[str, ...] = ()):
    """`state` (a freshly initialised TrainState) with the params of `config.init_from`: the task's
    `subtree` only, or all of them but the top-level subtrees `new` (a classifier head the source
    does not have, which starts fresh); then shrunk and perturbed as `config.finetune` says.
    With `new`, the source's top-level subtrees this model does not have (a T5's decoder under
    an encoder classifier, an untied LM output layer) are left behind, and said so."""
    if subtree is None and new:
        kept = {k: v for k, v in state.params.items() if k not in new}
        restored = _restore(state.replace(params=kept), config, None, log, keep_only=tuple(kept))
        log(f"init_from: {', '.join(new)} freshly initialised")
        return state.replace(params={**state.params, **restored.params})
    return _restore(state, config, subtree, log, keep_only=())


def _restore(state, config: Config, subtree: str | None, log: Log, keep_only: tuple[str, ...]):
    found = check(config)
    theirs = read_params(found, log)
    if keep_only:
        left = sorted(set(theirs) - set(keep_only))
        if left:
            log(f"init_from: the source's {', '.join(left)} left behind (this model has none)")
        theirs = {k: v for k, v in theirs.items() if k in keep_only}
    fresh = state.params if subtree is None else state.params[subtree]
    taken = replace_params(fresh, theirs if subtree is None else subtree_of(theirs, subtree), subtree or "")
    taken = shrink_and_perturb(taken, fresh, config.finetune.init_shrink, config.finetune.init_perturb, log)
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(taken))
    if subtree is None:
        log(f"init_from: all {count:,} parameters from step {found.step} of {found.workdir}")
        return state.replace(params=taken)
    log(f"init_from: {count:,} '{subtree}' parameters from step {found.step} of {found.workdir}; "
        f"the rest freshly initialised")
    return state.replace(params={**state.params, subtree: taken})
