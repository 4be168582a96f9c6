"""Decoder-only Transformer (GPT-2 / Llama style causal language model).

Assembled from lm/layers.py; the family-specific parts are only the causal mask and the
output head. Returns float32 logits; the loss lives in lm/losses.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from lm import layers, primitives
from lm.config import ModelConfig
from lm.models import heads


class GPT(nn.Module):
    config: ModelConfig  # vocab_size must be resolved (non-zero) by the caller.

    @nn.compact
    def __call__(self, tokens_BL, positions_BL=None, segment_ids_BL=None, deterministic: bool = True,
                 return_hidden: bool = False):
        """tokens_BL: int32 ids. positions_BL restart at 0 in every packed document;
        segment_ids_BL number the documents of a row (0 = padding). Returns logits [B, L, V]; with
        model.num_classes, a classifier's logits: [B, C] (classify=sequence) or [B, L, C] (token).
        return_hidden: (final hidden states [B, L, D], the output head [V, D]) instead of logits,
        for a loss that applies the head itself (lm/fused_loss.py; soft-capping is then its job)."""
        cfg = self.config
        batch, length = tokens_BL.shape
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(length), (batch, length))
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones((batch, length), jnp.int32)

        embed = layers.Embed(cfg.vocab_size, cfg, name="token_embed")
        x_BLD = embed(tokens_BL)
        if cfg.positions == "learned":
            table = self.param("position_embed", layers.normal_init((None, "embed"), 0.01),
                               (cfg.max_len, cfg.embed_dim), jnp.dtype(cfg.param_dtype))
            x_BLD += jnp.take(table, positions_BL, axis=0).astype(cfg.dtype)
        x_BLD = nn.Dropout(cfg.dropout_rate)(x_BLD, deterministic=deterministic)
        x_BLD = nn.with_logical_constraint(x_BLD, layers.ACTIVATION_AXES)

        mask_B1LS = layers.attention_mask(segment_ids_BL, segment_ids_BL, causal=True)
        x_BLD = layers.TransformerStack(cfg, causal=True, name="decoder")(x_BLD, mask_B1LS, positions_BL, deterministic)
        x_BLD = layers.Norm(cfg, name="final_norm")(x_BLD)
        if cfg.num_classes:  # a classifier instead of the language-model head (lm/models/heads.py)
            return heads.ClassifierHead(cfg, name=heads.HEAD)(x_BLD, segment_ids_BL, deterministic)

        if cfg.tie_embeddings:
            if return_hidden:
                return x_BLD, embed.embedding
            logits_BLV = embed.attend(x_BLD)
        else:
            init = layers.normal_init(("embed", "vocab"), 0.0 if cfg.zero_init_outputs else 0.02)
            kernel = self.param("output", init, (cfg.embed_dim, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
            if return_hidden:
                return x_BLD, kernel.T
            logits_BLV = jnp.einsum("BLD,DV->BLV", x_BLD, kernel.astype(cfg.dtype), preferred_element_type=jnp.float32)
        logits_BLV = primitives.softcap_logits(logits_BLV, cfg.logit_softcap)
        return nn.with_logical_constraint(logits_BLV, ("batch", "length", "vocab"))

