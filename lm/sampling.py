"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus).

Pure, jittable functions of [B, V] float32 logits; lm/generate.py calls them inside its
compiled decoding loop. The settings are a frozen (hashable) dataclass, so they are static
under jit: changing them recompiles, the per-token loop never does.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lm.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Sampler:
    temperature: float = 1.0  # 0: greedy (argmax); the filters below are then moot.
    top_k: int = 0  # keep the k most likely tokens; 0: off.
    top_p: float = 1.0  # keep the smallest set of most likely tokens whose mass reaches p; 1: off.

    def check(self, vocab_size: int) -> "Sampler":
        """Raises ConfigError naming the setting and its valid range."""
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} must be >= 0 (0 is greedy decoding)")
        if not 0 <= self.top_k <= vocab_size:
            raise ConfigError(f"top_k={self.top_k} must be in [0, {vocab_size}] (the vocabulary size; 0 turns it off)")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1] (1 turns it off)")
        return self


def filter_logits(logits_BV, sampler: Sampler):
    """Logits divided by the temperature, with tokens outside top-k / top-p set to -inf."""
    logits_BV = logits_BV.astype(jnp.float32) / sampler.temperature
    if sampler.top_k:
        kth_B1 = jax.lax.top_k(logits_BV, sampler.top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV >= kth_B1, logits_BV, -jnp.inf)
    if sampler.top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        # A token stays if the mass of the tokens strictly more likely than it is below p, so the
        # most likely token always stays and the kept set is the smallest reaching p.
        keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < sampler.top_p
        cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
        logits_BV = jnp.where(logits_BV >= cutoff_B1, logits_BV, -jnp.inf)
    return logits_BV


def choose(logits_BV, rng, sampler: Sampler):
    """int32 [B] next tokens."""
    if sampler.temperature == 0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits_BV, sampler), axis=-1).astype(jnp.int32)
