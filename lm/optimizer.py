"""Optimizers and learning-rate schedules, all from optax."""

from __future__ import annotations

from typing import Callable

import jax
import optax

from lm.config import OptimizerConfig


def schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then constant, linear or cosine decay to
    `end_learning_rate_fraction` of the peak at `decay_steps`, or inverse square root."""
    peak, warmup = config.learning_rate, config.warmup_steps
    decay_steps = max((config.decay_steps or total_steps) - warmup, 1)
    end = peak * config.end_learning_rate_fraction
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif config.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    elif config.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_learning_rate_fraction)
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
    optimizers = {
        "sgd": lambda: optax.sgd(lr, momentum=config.momentum or None),
        "adam": lambda: optax.adam(lr, config.b1, config.b2, config.eps),
        "adamw": lambda: optax.adamw(lr, config.b1, config.b2, config.eps, weight_decay=wd, mask=mask),
        "adagrad": lambda: optax.adagrad(lr, eps=config.eps),
        "adafactor": lambda: optax.adafactor(lr, weight_decay_rate=wd or None, weight_decay_mask=mask),
        "lion": lambda: optax.lion(lr, config.b1, config.b2, weight_decay=wd, mask=mask),
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
