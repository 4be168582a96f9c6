"""Bidirectional encoder (BERT): the shared Transformer stack without the causal mask.

Assembled from lm/layers.py. What is BERT's own: token-type (segment A/B) embeddings, a
pooled first-token ([CLS]) output (dense + tanh), and the heads. With `num_classes == 0` the
model carries the pretraining heads (masked-LM, tied to the input embedding, and
next-sentence prediction); with `num_classes >= 2` a classifier on the pooled output.

Everything but the heads lives under the `encoder` parameter subtree, so a fine-tuning run
restores exactly that subtree from a pretraining checkpoint (lm/init_from.py).
The blocks are pre-norm (as every family here) rather than the original post-norm: it trains
stably at higher learning rates, which matters for the short CPU budgets. `model.norm_position="post"`
with `model.embedding_norm` and `mlp_activation="gelu_exact"` is the original BERT, the shape
Hugging Face checkpoints have (lm/interop/bert.py converts them).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm import layers
from lm.config import ModelConfig
from lm.models import heads

ENCODER = "encoder"  # the parameter subtree a fine-tuning run takes from a pretrained checkpoint


def _dense(module: nn.Module, name: str, x_BD, features: int, names=("embed", "mlp")):
    cfg = module.config
    kernel = module.param(f"{name}_kernel", layers.normal_init(names), (x_BD.shape[-1], features),
                          jnp.dtype(cfg.param_dtype))
    bias = module.param(f"{name}_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (names[1],)),
                        (features,), jnp.dtype(cfg.param_dtype))
    return layers.dot("...D,DF->...F", x_BD, kernel, cfg.dtype) + bias.astype(cfg.dtype)


class BertEncoder(nn.Module):
    """Embeddings (-> norm) -> bidirectional stack -> final norm (pre-norm only); plus the pooled [CLS] vector."""
    config: ModelConfig

    @nn.compact
    def __call__(self, tokens_BL, type_ids_BL, segment_ids_BL, deterministic: bool = True):
        """segment_ids_BL: 1 on real tokens, 0 on padding (keys there are never attended).
        Returns (hidden states [B, L, D], pooled [B, D]) and the token embedding module."""
        cfg = self.config
        batch, length = tokens_BL.shape
        positions_BL = jnp.broadcast_to(jnp.arange(length), (batch, length))
        embed = layers.Embed(cfg.vocab_size, cfg, name="token_embed")
        x_BLD = embed(tokens_BL)
        position_table = self.param("position_embed", layers.normal_init((None, "embed"), 0.02),
                                    (cfg.max_len, cfg.embed_dim), jnp.dtype(cfg.param_dtype))
        type_table = self.param("type_embed", layers.normal_init((None, "embed"), 0.02),
                                (cfg.type_vocab_size, cfg.embed_dim), jnp.dtype(cfg.param_dtype))
        x_BLD += jnp.take(position_table, positions_BL, axis=0).astype(cfg.dtype)
        x_BLD += jnp.take(type_table, type_ids_BL, axis=0).astype(cfg.dtype)
        if cfg.embedding_norm:
            x_BLD = layers.Norm(cfg, name="embedding_norm")(x_BLD)
        x_BLD = nn.Dropout(cfg.dropout_rate)(x_BLD, deterministic=deterministic)
        x_BLD = nn.with_logical_constraint(x_BLD, layers.ACTIVATION_AXES)

        mask_B1LS = layers.attention_mask(segment_ids_BL, segment_ids_BL, causal=False)
        x_BLD = layers.TransformerStack(cfg, causal=False, name="layers")(x_BLD, mask_B1LS, positions_BL, deterministic)
        if cfg.norm_position == "pre":  # post-norm blocks already end in a norm
            x_BLD = layers.Norm(cfg, name="final_norm")(x_BLD)
        if cfg.pooling == "mean":  # average of the real tokens' states: no [CLS]-specific training needed
            real_BL1 = (segment_ids_BL > 0)[..., None].astype(x_BLD.dtype)
            summary_BD = jnp.sum(x_BLD * real_BL1, axis=1) / jnp.maximum(jnp.sum(real_BL1, axis=1), 1.0)
        else:
            summary_BD = x_BLD[:, 0]
        pooled_BD = jnp.tanh(_dense(self, "pooler", summary_BD, cfg.embed_dim, ("embed", "mlp")))
        return x_BLD, pooled_BD, embed


class Bert(nn.Module):
    config: ModelConfig  # vocab_size must be resolved (non-zero) by the caller.

    @nn.compact
    def __call__(self, tokens_BL, type_ids_BL=None, segment_ids_BL=None, masked_positions_BP=None,
                 deterministic: bool = True):
        """tokens_BL: int32 ids starting with [CLS]; type_ids_BL: 0 for segment A, 1 for B;
        segment_ids_BL: 1 real / 0 padding. Pretraining (num_classes == 0): returns
        (MLM logits [B, P, V] at masked_positions_BP, NSP logits [B, 2]); scoring only the P
        masked positions instead of all L keeps the vocabulary matmul ~L/P times cheaper.
        Classification: returns logits [B, num_classes]; with classify=token, [B, L, num_classes]."""
        cfg = self.config
        if type_ids_BL is None:
            type_ids_BL = jnp.zeros_like(tokens_BL)
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones_like(tokens_BL)
        x_BLD, pooled_BD, embed = BertEncoder(cfg, name=ENCODER)(tokens_BL, type_ids_BL, segment_ids_BL, deterministic)
        if cfg.num_classes and cfg.classify == "token":  # tags or answer spans (lm/models/heads.py)
            return heads.ClassifierHead(cfg, name=heads.HEAD)(x_BLD, segment_ids_BL, deterministic)
        pooled_BD = nn.Dropout(cfg.dropout_rate)(pooled_BD, deterministic=deterministic)
        if cfg.num_classes:
            logits_BC = _dense(self, "classifier", pooled_BD, cfg.num_classes, ("embed", None))
            return logits_BC.astype(jnp.float32)

        if masked_positions_BP is None:
            masked_positions_BP = jnp.broadcast_to(jnp.arange(tokens_BL.shape[1]), tokens_BL.shape)
        picked_BPD = jnp.take_along_axis(x_BLD, masked_positions_BP[..., None], axis=1)
        h_BPD = layers.gelu(_dense(self, "mlm_transform", picked_BPD, cfg.embed_dim, ("embed", "mlp")),
                            exact=cfg.mlp_activation == "gelu_exact")  # the original BERT's follows its MLP's
        h_BPD = layers.Norm(cfg, name="mlm_norm")(h_BPD)
        mlm_bias_V = self.param("mlm_output_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                                ("vocab",)), (cfg.vocab_size,))
        mlm_logits_BPV = embed.attend(h_BPD) + mlm_bias_V  # tied to the input embedding
        nsp_logits_B2 = _dense(self, "nsp", pooled_BD, 2, ("embed", None))
        if cfg.nsp_head == "pooled_and_overlap":
            nsp_logits_B2 += _OverlapScore(cfg, name="nsp_overlap")(embed(tokens_BL), x_BLD, type_ids_BL, segment_ids_BL)
        return mlm_logits_BPV, nsp_logits_B2.astype(jnp.float32)


class _OverlapScore(nn.Module):
    """Next-sentence evidence from how much of B restates A: each B token's best cosine
    match among A's tokens, averaged over B with learned weights (so content words can count
    more than "the"), scaled into a logit for "B follows A". Lexical overlap separates true
    continuations from another article's text (docs/bert.md: ROC AUC 0.89 with TF-IDF at
    128-piece pairs), but the pooled [CLS] vector alone never learnt to see it at our scale."""
    config: ModelConfig

    @nn.compact
    def __call__(self, embedded_BLD, x_BLD, type_ids_BL, segment_ids_BL):
        """Matches compare the input token embeddings (a word matches itself exactly) and teach
        them nothing; the weights come from the final states, so context decides which words count."""
        cfg = self.config
        real_BL = (segment_ids_BL > 0) & (jnp.arange(x_BLD.shape[1]) > 0)  # [CLS] compares nothing
        in_a_BL, in_b_BL = real_BL & (type_ids_BL == 0), real_BL & (type_ids_BL == 1)
        # No gradient through the match: pulling co-occurring words' embeddings together (which
        # the NSP loss would do) wrecked the tied MLM output (MLM accuracy stalled at 0.07 by 800 steps).
        e_BLD = jax.lax.stop_gradient(embedded_BLD).astype(jnp.float32)
        unit_BLD = e_BLD / jnp.maximum(jnp.linalg.norm(e_BLD, axis=-1, keepdims=True), 1e-6)
        similarity_BLL = jnp.einsum("bqd,bkd->bqk", unit_BLD, unit_BLD)
        best_BL = jnp.max(jnp.where(in_a_BL[:, None, :], similarity_BLL, -1.0), axis=-1)
        weight_logits_BL = _dense(self, "weight", x_BLD, 1, ("embed", None))[..., 0]
        weights_BL = jax.nn.softmax(jnp.where(in_b_BL, weight_logits_BL, -1e9), axis=-1) * in_b_BL
        overlap_B = jnp.sum(weights_BL * best_BL, axis=-1)
        # a cosine gap of a few hundredths must become a logit of order one: start the scale at 10
        log_scale = self.param("log_scale", nn.with_logical_partitioning(nn.initializers.constant(2.3), ()), ())
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ()), ())
        score_B = jnp.exp(log_scale) * overlap_B + bias
        return jnp.stack([jnp.zeros_like(score_B), score_B], axis=-1).astype(cfg.dtype)
