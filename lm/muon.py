"""Muon's update with the orthogonalisation batched and split over the data-parallel devices.

optax.contrib.scale_by_muon orthogonalises each hidden matrix on its own, and under data
parallelism every device does all of them: the parameters are replicated, so the Newton-Schulz
iterations are too. Here every matrix of one shape (the model's query/key/value/out kernels of
every layer, its MLP kernels) is stacked and orthogonalised in one vmapped call, and the stack is
sharded along the batch mesh axes, so each of N devices orthogonalises 1/N of the matrices and
the results are gathered back. Same state (optax's MuonState: checkpoints are interchangeable),
same momentum and the same Newton-Schulz function as optax's; tests/test_speedrun.py checks the
updates equal optax's over several steps. At gpt_speedrun's size (16 matrices of 128 x 128 and
8 of 128 x 512) the stacked form alone is 1.6x faster than one call per matrix on one CPU device.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import _muon  # the Newton-Schulz function, reshapes and coefficients (not re-exported)


def scale_by_grouped_muon(beta: float, weight_dimension_numbers, ns_steps: int = 5,
                          eps: float = 1e-8) -> optax.GradientTransformation:
    """optax.contrib.scale_by_muon (Nesterov momentum, Frobenius preconditioning) with the
    orthogonalisation of equally shaped matrices batched; `weight_dimension_numbers(updates)`
    gives each leaf's MuonDimensionNumbers (None: not a hidden matrix, left as it is)."""

    def init_fn(params):
        return _muon.MuonState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params),
                               ns_coeffs=jnp.asarray(_muon._DEFAULT_NS_COEFFS))

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, beta, 1)
        count = optax.safe_increment(state.count)
        mu_hat = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g,
                              optax.tree.bias_correction(mu, beta, optax.safe_increment(count)),
                              optax.tree.bias_correction(updates, beta, count))
        orthogonal = orthogonalise_grouped(mu_hat, weight_dimension_numbers(updates), state.ns_coeffs, ns_steps, eps)
        return orthogonal, _muon.MuonState(count=count, mu=mu, ns_coeffs=state.ns_coeffs)

    return optax.GradientTransformation(init_fn, update_fn)


def orthogonalise_grouped(tree, dimension_numbers, ns_coeffs, ns_steps: int = 5, eps: float = 1e-8):
    """Newton-Schulz orthogonalisation of every leaf with dimension numbers (a leaf's batch axes,
    a scanned stack's layers, are separate matrices), one call per matrix shape."""
    leaves, treedef = jax.tree.flatten(tree)
    dims = treedef.flatten_up_to(dimension_numbers)
    groups: dict[tuple[int, int], list] = {}  # (rows, columns) -> [(leaf index, matrices, inverse)]
    for i, (leaf, dim) in enumerate(zip(leaves, dims)):
        if dim is not None:
            reshape, inverse = _muon._compute_muon_reshape(leaf, dim)
            matrices = reshape(leaf)  # [batch, rows, columns]
            groups.setdefault(matrices.shape[1:], []).append((i, matrices, inverse))
    out = list(leaves)
    for members in groups.values():
        stack = jnp.concatenate([matrices for _, matrices, _ in members])
        # Under the trainer's mesh rules this splits the stack over the data-parallel devices
        # (uneven counts are padded by the partitioner); outside a mesh it is a no-op.
        stack = nn.with_logical_constraint(stack, ("batch", None, None))
        done = _muon.orthogonalize_via_newton_schulz(stack, ns_coeffs, ns_steps, "frobenius", eps,
                                                     optax.contrib.MuonDimensionNumbers(1, 2))
        ends = np.cumsum([matrices.shape[0] for _, matrices, _ in members])[:-1]
        for (i, _, inverse), part in zip(members, jnp.split(done, ends)):
            out[i] = inverse(part)
    return jax.tree.unflatten(treedef, out)
