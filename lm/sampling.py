"""A plain sampling loop for decoder models: one full forward pass per new token.

Simple and obviously correct (the reference that cached decoding is tested against);
fast cached decoding lives in its own module."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sample(model: nn.Module, params, prompt_ids: list[int], num_tokens: int, window: int,
           temperature: float = 0.8, seed: int = 0, stop_id: int | None = None) -> list[int]:
    """Continues `prompt_ids` by up to `num_tokens` ids, attending to the last `window` ids.
    temperature 0 is greedy. Returns only the new ids."""

    @jax.jit
    def next_token(params, tokens_1L, last_index, rng):
        logits_V = model.apply({"params": params}, tokens_1L)[0, last_index]
        if temperature <= 0:
            return jnp.argmax(logits_V)
        return jax.random.categorical(rng, logits_V / temperature)

    ids, new = list(prompt_ids), []
    rng = jax.random.PRNGKey(seed)
    for i in range(num_tokens):
        context = ids[-window:]
        tokens = np.zeros((1, window), np.int32)
        tokens[0, :len(context)] = context
        token = int(next_token(params, tokens, len(context) - 1, jax.random.fold_in(rng, i)))
        if token == stop_id:
            break
        ids.append(token)
        new.append(token)
    return new
