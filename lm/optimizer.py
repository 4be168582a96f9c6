"""Optimizers and learning-rate schedules, all from optax."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import optax
from flax.core import meta

from lm import muon as muon_lib
from lm.config import OptimizerConfig


def schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then constant, linear or cosine decay to
    `end_learning_rate_fraction` of the peak at `decay_steps`, warmup-stable-decay (the peak, then
    linear to that fraction over the last `cooldown_fraction`), or inverse square root."""
    peak, warmup = config.learning_rate, config.warmup_steps
    decay_steps = max((config.decay_steps or total_steps) - warmup, 1)
    end = peak * config.end_learning_rate_fraction
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif config.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    elif config.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_learning_rate_fraction)
    elif config.schedule == "wsd":  # warmup-stable-decay: the peak, then a linear cooldown at the end
        cooldown = max(round(decay_steps * config.cooldown_fraction), 1)
        after = optax.join_schedules([optax.constant_schedule(peak), optax.linear_schedule(peak, end, cooldown)],
                                     [decay_steps - cooldown])
    else:  # rsqrt: peak * sqrt(warmup / step) after warm-up, as in the original Transformer.
        base = max(warmup, 1)
        after = lambda count: peak * (base / (base + count)) ** 0.5  # noqa: E731
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def is_weight(path, leaf) -> bool:
    """Matrices and embeddings, as against norm scales, biases and scalars. Rank alone cannot
    tell: attention biases are [heads, head_dim], and a scanned stack (`model.scan_layers`) gives
    every scale and bias a leading layer axis; so names rule out scales and biases, and rank
    rules out vectors and scalars."""
    name = str(getattr(path[-1], "key", path[-1]))
    return leaf.ndim >= 2 and not (name == "scale" or name.endswith("bias"))


# Muon's dimension numbers of the hidden matrices, by parameter name (lm/layers.py's Attention and
# Mlp), in negative axes so a scanned stack's leading layer axis is a batch axis: the attention
# kernels [D, H, E] and [H, E, D] are orthogonalised as the [D, H*E] and [H*E, D] maps they are.
_MUON_AXES = {
    "query": optax.contrib.MuonDimensionNumbers((-3,), (-2, -1)),
    "key": optax.contrib.MuonDimensionNumbers((-3,), (-2, -1)),
    "value": optax.contrib.MuonDimensionNumbers((-3,), (-2, -1)),
    "out": optax.contrib.MuonDimensionNumbers((-3, -2), (-1,)),
    "wi": optax.contrib.MuonDimensionNumbers((-2,), (-1,)),
    "wi_gate": optax.contrib.MuonDimensionNumbers((-2,), (-1,)),
    "wo": optax.contrib.MuonDimensionNumbers((-2,), (-1,)),
}


def _parameter_name(path) -> str:
    """The parameter's own name: the last dict key (a boxed leaf's path ends in `.value`)."""
    return next((str(k.key) for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)), "")


def muon_dimension_numbers(params):
    """Per leaf: Muon's dimension numbers for a hidden matrix, None for everything Adam updates
    (embeddings, the output head, position tables, norms, biases, scalars)."""
    def dims(path, leaf):
        return _MUON_AXES.get(_parameter_name(path)) if getattr(leaf, "ndim", 0) >= 2 else None
    return jax.tree_util.tree_map_with_path(dims, params)


def muon(config: OptimizerConfig, lr: optax.Schedule, muon_lr: optax.Schedule) -> optax.GradientTransformation:
    """Muon for the hidden matrices (optax.contrib's Newton-Schulz orthogonalisation of Nesterov
    momentum, batched by shape and split over the devices in lm/muon.py, scaled by
    sqrt(max(1, fan_out / fan_in))), AdamW for the rest. The two groups get
    their own peak rates (muon_learning_rate, learning_rate) under one schedule shape."""
    def labels(params):
        # On unboxed params: a prefix of a boxed tree (init under eval_shape), so a group's masked
        # leaves become bare MaskedNodes, not boxes around them, and the state's shardings line up.
        return jax.tree.map(lambda dims: "adam" if dims is None else "muon", muon_dimension_numbers(meta.unbox(params)),
                            is_leaf=lambda x: x is None or isinstance(x, optax.contrib.MuonDimensionNumbers))

    hidden = optax.chain(
        muon_lib.scale_by_grouped_muon(config.muon_momentum, muon_dimension_numbers),
        optax.contrib._muon.scale_by_shape(weight_dimension_numbers=muon_dimension_numbers),
        optax.add_decayed_weights(config.weight_decay),
        optax.scale_by_learning_rate(muon_lr))
    rest = optax.adamw(lr, config.b1, config.b2, config.eps, weight_decay=config.weight_decay, mask=decay_mask)
    return optax.partition({"muon": hidden, "adam": rest}, labels)


def decay_mask(params):
    """True for weights that get weight decay: matrices and embeddings, not norms or biases."""
    return jax.tree_util.tree_map_with_path(is_weight, params)


def scale_by_path(factor: Callable) -> optax.GradientTransformation:
    """Multiplies each leaf's update by `factor(path)`, a static float per parameter."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(lambda path, u: u * factor(path), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def build(config: OptimizerConfig, total_steps: int, update_scale: Callable | None = None) -> optax.GradientTransformation:
    """`update_scale(path) -> float` (optional): per-parameter learning-rate factors. Scaling the
    final update scales that parameter's learning rate (and its decoupled weight decay); a factor
    of 0 freezes it, and its gradient is zeroed first so it does not count in the clipping norm."""
    lr = schedule(config, total_steps)
    wd, mask = config.weight_decay, decay_mask
    muon_lr = schedule(dataclasses.replace(config, learning_rate=config.muon_learning_rate), total_steps)
    optimizers = {
        "sgd": lambda: optax.sgd(lr, momentum=config.momentum or None),
        "adam": lambda: optax.adam(lr, config.b1, config.b2, config.eps),
        "adamw": lambda: optax.adamw(lr, config.b1, config.b2, config.eps, weight_decay=wd, mask=mask),
        "adagrad": lambda: optax.adagrad(lr, eps=config.eps),
        "adafactor": lambda: optax.adafactor(lr, weight_decay_rate=wd or None, weight_decay_mask=mask),
        "lion": lambda: optax.lion(lr, config.b1, config.b2, weight_decay=wd, mask=mask),
        "muon": lambda: muon(config, lr, muon_lr),
    }
    chain = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    if update_scale is None:
        return optax.chain(*chain, optimizers[config.name]())
    frozen = scale_by_path(lambda path: 0.0 if update_scale(path) == 0.0 else 1.0)
    return optax.chain(frozen, *chain, optimizers[config.name](), scale_by_path(update_scale))


def for_task(config, objective) -> optax.GradientTransformation:
    """The run's optimizer: `config.optimizer` over `config.train.steps`, with the objective's
    per-parameter update scales if it has any (lm/tasks/base.py). Everything that rebuilds a
    run's train state (the assembly, importing a workdir) uses this one, or restores mismatch."""
    return build(config.optimizer, config.train.steps, objective.update_scale)
