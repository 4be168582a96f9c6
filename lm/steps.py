"""The pure, jittable functions of training: state, train_step, eval_step.

`train_step(state, batch) -> (state, metrics)` and `eval_step(params, batch) -> sums` know
nothing of meshes or hosts; lm/assembly.py compiles them once with explicit shardings.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct



class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer updates applied so far
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32[2] base key; each step folds in its step number


def init_params(model: nn.Module, seed: int, init_inputs: tuple):
    """Fresh parameters, boxed with their logical axis names. `init_inputs`: the objective's
    dummy model inputs."""
    return model.init(jax.random.fold_in(jax.random.PRNGKey(seed), 1), *init_inputs)["params"]


def state_from_params(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Step 0 of a run whose parameters are `params`: a fresh optimizer state and the run's RNG."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.fold_in(jax.random.PRNGKey(seed), 2))


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int, init_inputs: tuple) -> TrainState:
    """Initial state with parameters still boxed with their logical axis names (call under
    jax.eval_shape to get shardings, or unbox)."""
    return state_from_params(init_params(model, seed, init_inputs), tx, seed)


def make_train_step(model: nn.Module, objective, tx: optax.GradientTransformation, learning_rate: Callable,
                    microbatches: int = 1, dropout: bool = True, inject_nan_at_steps: tuple[int, ...] = (),
                    loss_sums: Callable | None = None):
    """Gradient accumulation runs as a scan over microbatches inside the step, so only one
    gradient-sized buffer exists beside the parameters.

    Non-finite guard: when the loss, the gradient norm or the updated parameters' norm is NaN
    or Inf, the step keeps the old params and optimizer state (the step counter still advances,
    so the data order is unchanged) and reports `skipped` = 1; the host decides whether to go on
    (train.nonfinite="skip") or stop ("stop"). So params never become non-finite through a step.
    `inject_nan_at_steps` (testing only) makes the loss NaN at those steps (1-based, as logged).
    `objective` (lm/tasks/base.py) gives the loss sums, the batch's divisor and the extra
    metrics; `loss_sums` replaces `objective.loss_sums` (same signature and sums; lm/distill.py
    uses it)."""
    loss_sums = loss_sums or objective.loss_sums

    def microbatch_grads(params, batch, rng, total_weight):
        def objective(p):
            sums = loss_sums(model, p, batch, rng, not dropout)
            return (sums["loss_sum"] + sums.get("z_loss_sum", 0.0)) / total_weight, sums
        return jax.grad(objective, has_aux=True)(params)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        total_weight = jnp.maximum(objective.total_weight(batch), 1.0)
        if inject_nan_at_steps:
            poisoned = jnp.isin(state.step + 1, jnp.asarray(inject_nan_at_steps, jnp.int32))
            total_weight = jnp.where(poisoned, jnp.nan, total_weight)
        if microbatches == 1:
            grads, sums = microbatch_grads(state.params, batch, rng, total_weight)
        else:
            split = jax.tree.map(lambda x: x.reshape(microbatches, x.shape[0] // microbatches, *x.shape[1:]), batch)

            def accumulate(carry, inputs):
                index, micro = inputs
                grads, sums = microbatch_grads(state.params, micro, jax.random.fold_in(rng, index), total_weight)
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                microbatch_grads, state.params, jax.tree.map(lambda x: x[0], split), rng, total_weight))
            (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), split))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        loss, grad_norm, param_norm = sums["loss_sum"] / total_weight, optax.global_norm(grads), optax.global_norm(params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                         (params, opt_state), (state.params, state.opt_state))
        metrics = {
            "loss": loss,
            **({"z_loss": sums["z_loss_sum"] / total_weight} if "z_loss_sum" in sums else {}),
            **objective.train_metrics(sums, total_weight),
            "grad_norm": grad_norm,
            "param_norm": param_norm,
            "learning_rate": learning_rate(_applied_updates(state.opt_state, state.step)),
            "tokens": sums["weight"],
            "skipped": 1.0 - finite.astype(jnp.float32),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def _applied_updates(opt_state, step):
    """How many updates the optimizer has applied: its own step count, which a skipped
    (non-finite) step leaves behind `step`, so the logged learning rate is the one in use."""
    counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return counts[0][1] if counts else step


def make_eval_step(model: nn.Module, objective):
    def eval_step(params, batch) -> dict:
        """The objective's evaluation sums over the batch (lm/tasks)."""
        return objective.eval_sums(model, params, batch)

    return eval_step
