"""The output head and the cross-entropy in one pass, a chunk of positions at a time.

`losses.cross_entropy` takes logits: the model writes a [B, L, V] float32 array, the loss reads
it two or three times, and autodiff writes its gradient, as large again, for the head's two
backward matmuls. At a 50k vocabulary and 16 x 1024 tokens that is 3.3 GB per array.
`fused_cross_entropy` takes the final hidden states and the head's [V, D] matrix instead and
walks the sequence `chunk` positions at a time: per chunk it computes the logits, the loss
terms and, in the same pass, their gradient with respect to the logits, and turns that into
the hidden states' gradient and the chunk's share of the head's gradient. Only one chunk's
[B, chunk, V] logits exist at a time; what the backward pass keeps is the two gradients, which
it scales by the loss's cotangent. The FLOPs are those of the unfused head (no recomputation).

The gradient is computed in the forward pass for the objective the train step differentiates,
loss_sum + z_loss_sum (lm/steps.py): in the sums returned, "loss_sum" carries that whole
gradient and "z_loss_sum" none, so their sum is differentiated exactly and each value is
reported as `cross_entropy` reports it. Callers that weight the two terms differently must use
`cross_entropy`.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import losses
from lm.primitives import dot, softcap_logits
from lm.sharding import RULES

_BATCH_AXES = dict(RULES)["batch"]


def fused_cross_entropy(hidden_BLD, head_VD, targets_BL, weights_BL, *, chunk: int, dtype,
                        softcap: float = 0.0, z_loss: float = 0.0) -> dict:
    """`losses.cross_entropy` of logits = hidden @ head^T (soft-capped when softcap > 0), with
    the matmuls in `dtype` accumulating in float32, as the model's own head computes them.
    `chunk` positions per pass; the sequence length must be a multiple of it."""
    length = hidden_BLD.shape[1]
    if chunk <= 0 or length % chunk:
        raise ValueError(f"fused_cross_entropy: chunk={chunk} must be positive and divide the sequence "
                         f"length {length}")
    weights_BL = weights_BL.astype(jnp.float32)
    objective, z_sum, correct = _fused(chunk, jnp.dtype(dtype).name, float(softcap), float(z_loss),
                                       hidden_BLD, head_VD, targets_BL, weights_BL)
    z_sum = jax.lax.stop_gradient(z_sum)
    return {"loss_sum": objective - z_sum, "z_loss_sum": z_sum, "correct": jax.lax.stop_gradient(correct),
            "weight": jnp.sum(weights_BL)}


def _split(x, chunk):
    """[B, L, ...] -> [L / chunk, B, chunk, ...]: scanned over the sequence, so a batch sharded
    over devices stays sharded in every chunk."""
    b, length = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, length // chunk, chunk, *x.shape[2:]), 1, 0)


def _merge(x):
    """The inverse of `_split`."""
    n, b, chunk = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape(b, n * chunk, *x.shape[3:])


def _chunk_terms(x_BCD, head_VD, targets_BC, weights_BC, dtype, softcap, z_loss, with_grad: bool):
    """One chunk: summed NLL, summed z-loss, summed hits and, with_grad, d(objective)/d(logits)."""
    logits = softcap_logits(dot("BCD,VD->BCV", x_BCD, head_VD, dtype, jnp.float32), softcap)
    nll, correct, log_normalizer = losses.nll_and_correct(logits, targets_BC)
    sums = (jnp.sum(nll * weights_BC), z_loss * jnp.sum(jnp.square(log_normalizer) * weights_BC),
            jnp.sum(correct * weights_BC))
    if not with_grad:
        return sums, None
    # d/dlogits of w * (lse - logit[t]) + z * w * lse^2 = w * (1 + 2 z lse) * softmax - w * onehot.
    probs = jnp.exp(logits - log_normalizer[..., None])
    scale = (weights_BC * (1.0 + 2.0 * z_loss * log_normalizer))[..., None]
    onehot = jax.nn.one_hot(targets_BC, logits.shape[-1], dtype=jnp.float32)
    grad = scale * probs - weights_BC[..., None] * onehot
    if softcap:  # d(cap tanh(u / cap))/du = 1 - (capped / cap)^2
        grad *= 1.0 - jnp.square(logits / softcap)
    return sums, grad


def _batch_groups(batch: int) -> int:
    """How many devices the batch is split over, in the mesh being traced under (1 outside one)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return 1
    groups = math.prod(mesh.shape[axis] for axis in _BATCH_AXES if axis in mesh.axis_names)
    return groups if batch % groups == 0 else 1


def _scan(hidden_BLD, head_VD, targets_BL, weights_BL, chunk, dtype, softcap, z_loss, with_grad: bool):
    xs = (_split(hidden_BLD, chunk), _split(targets_BL, chunk), _split(weights_BL, chunk))
    zero = jnp.zeros((), jnp.float32)
    # The head's gradient sums over the batch, which is split over devices: each keeps its own
    # partial sum, [G, V, D] with G over the batch's devices, and they are added once after the
    # loop. A [V, D] carry would be all-reduced in every chunk.
    batch = hidden_BLD.shape[0]
    groups = _batch_groups(batch)

    def body(carry, chunk_inputs):
        x_BCD, targets_BC, weights_BC = chunk_inputs
        sums, grad_BCV = _chunk_terms(x_BCD, head_VD, targets_BC, weights_BC, dtype, softcap, z_loss, with_grad)
        totals = tuple(a + b for a, b in zip(carry[0], sums))
        if not with_grad:
            return (totals, None), None
        d_hidden = dot("BCV,VD->BCD", grad_BCV, head_VD, dtype, jnp.float32)
        by_group = lambda x: x.reshape(groups, batch // groups, *x.shape[1:])  # noqa: E731
        d_head = carry[1] + dot("GBCV,GBCD->GVD", by_group(grad_BCV), by_group(x_BCD), dtype, jnp.float32)
        d_head = nn.with_logical_constraint(d_head, ("batch", "vocab", "embed"))
        return (totals, d_head), d_hidden.astype(hidden_BLD.dtype)

    init_head = jnp.zeros((groups, *head_VD.shape), jnp.float32) if with_grad else None
    (totals, d_head), d_hidden = jax.lax.scan(body, ((zero, zero, zero), init_head), xs)
    return totals, None if d_head is None else jnp.sum(d_head, axis=0), d_hidden


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _fused(chunk, dtype, softcap, z_loss, hidden_BLD, head_VD, targets_BL, weights_BL):
    """(loss_sum + z_loss_sum, z_loss_sum, correct); differentiable in the first only."""
    (nll, z_sum, correct), _, _ = _scan(hidden_BLD, head_VD, targets_BL, weights_BL, chunk, dtype, softcap, z_loss,
                                        with_grad=False)
    return nll + z_sum, z_sum, correct


def _fused_fwd(chunk, dtype, softcap, z_loss, hidden_BLD, head_VD, targets_BL, weights_BL):
    (nll, z_sum, correct), d_head, d_hidden = _scan(hidden_BLD, head_VD, targets_BL, weights_BL, chunk, dtype,
                                                    softcap, z_loss, with_grad=True)
    residuals = (_merge(d_hidden), d_head.astype(head_VD.dtype), targets_BL, weights_BL)
    return (nll + z_sum, z_sum, correct), residuals


def _fused_bwd(chunk, dtype, softcap, z_loss, residuals, cotangents):
    del chunk, dtype, softcap, z_loss
    d_hidden, d_head, targets_BL, weights_BL = residuals
    g = cotangents[0]  # the other outputs are reported, never differentiated
    return ((g * d_hidden).astype(d_hidden.dtype), (g * d_head).astype(d_head.dtype),
            _zero_cotangent(targets_BL), jnp.zeros_like(weights_BL))


def _zero_cotangent(integers):
    """Integer inputs take float0 cotangents."""
    return np.zeros(integers.shape, jax.dtypes.float0)


_fused.defvjp(_fused_fwd, _fused_bwd)
