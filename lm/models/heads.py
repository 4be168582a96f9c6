"""Classifier heads on a family's final hidden states (model.num_classes >= 2).

`model.classify="sequence"`: one label per row from pooled states: the last real token (a
decoder's only position that has seen the whole text) or the mean over real tokens.
`model.classify="token"`: one score vector per token, for tags (token_classification) and for
answer start and end (extractive_qa, two classes). BERT's sequence classifier keeps its own
pooler (lm/models/bert.py); everything else goes through here.

The head's parameters are a top-level subtree of their own, `HEAD`, so init_from takes every
other parameter from a pretrained run of the family and this one starts fresh.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from lm import layers
from lm.config import ModelConfig

HEAD = "head"


def pool(x_BLD, segment_ids_BL, pooling: str):
    """[B, D] of each row's real tokens (segment id > 0; rows are padded on the right)."""
    real_BL = segment_ids_BL > 0
    if pooling == "last":
        last_B = jnp.maximum(jnp.sum(real_BL, axis=1) - 1, 0)
        return jnp.take_along_axis(x_BLD, last_B[:, None, None], axis=1)[:, 0]
    if pooling == "mean":
        real_BL1 = real_BL[..., None].astype(x_BLD.dtype)
        return jnp.sum(x_BLD * real_BL1, axis=1) / jnp.maximum(jnp.sum(real_BL1, axis=1), 1.0)
    raise ValueError(f"pooling {pooling!r} is not a head pooling (last or mean)")


class ClassifierHead(nn.Module):
    """x_BLD -> logits [B, C] (sequence) or [B, L, C] (token), float32."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BLD, segment_ids_BL, deterministic: bool = True):
        cfg = self.config
        if cfg.classify == "sequence":
            x_BLD = pool(x_BLD, segment_ids_BL, cfg.pooling)
        x_BLD = nn.Dropout(cfg.dropout_rate)(x_BLD, deterministic=deterministic)
        kernel = self.param("kernel", layers.normal_init(("embed", None)), (cfg.embed_dim, cfg.num_classes),
                            jnp.dtype(cfg.param_dtype))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
                          (cfg.num_classes,), jnp.dtype(cfg.param_dtype))
        return (layers.dot("...D,DC->...C", x_BLD, kernel, cfg.dtype) + bias.astype(cfg.dtype)).astype(jnp.float32)
