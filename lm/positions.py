"""Position encodings as pure functions: rotary embeddings and T5's relative-position buckets.
The learned relative bias that uses the buckets is a module in lm/layers.py."""

from __future__ import annotations

import jax.numpy as jnp


def rotary(x_BHLE, positions_BL, theta: float):
    """Rotary position embedding, "rotate half" layout: dimension i pairs with i + E/2.

    This is the layout of Hugging Face's Llama weights; Meta's original checkpoints pair
    adjacent dimensions and need their q/k projections permuted on import.
    """
    half = x_BHLE.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_B1LE = (positions_BL[..., None].astype(jnp.float32) * inv_freq)[:, None]
    sin, cos = jnp.sin(angles_B1LE), jnp.cos(angles_B1LE)
    x1, x2 = jnp.split(x_BHLE.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BHLE.dtype)


def relative_position_bucket(relative_BLS, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucketing of relative positions (key position - query position) into int32 ids.

    Half of a direction's buckets hold one exact distance each (0, 1, 2, ...); the rest cover
    larger distances on a log scale up to `max_distance`, beyond which all share the last
    bucket. Bidirectional (encoder) splits the buckets between keys before and after the
    query; unidirectional (decoder) only ever sees keys at or before the query."""
    offset = jnp.zeros_like(relative_BLS)
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(relative_BLS > 0, num_buckets, 0)
        distance = jnp.abs(relative_BLS)
    else:
        distance = jnp.maximum(-relative_BLS, 0)
    exact = num_buckets // 2
    scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / jnp.log(max_distance / exact)
    log_bucket = jnp.minimum(exact + (scaled * (num_buckets - exact)).astype(jnp.int32), num_buckets - 1)
    return (offset + jnp.where(distance < exact, distance, log_bucket)).astype(jnp.int32)
