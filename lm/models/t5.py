"""Encoder-decoder Transformer (T5): text in, text out.

Assembled from lm/layers.py: the encoder is the shared stack with a bidirectional mask, the
decoder is the same causal stack GPT uses plus cross-attention to the encoder output. What
is T5's own: one relative position bias per stack (or rotary positions, by config), a final
RMSNorm after each stack, and the decoder reading its inputs shifted right (the loss and the
data live in lm/tasks and lm/data/seq2seq.py).

A classifier (model.num_classes >= 2; lm/tasks/labelled.py) is the encoder alone: token
embeddings, encoder stack, its norm and position bias, and a head (lm/models/heads.py) on the
encoder states, pooled (mean over real tokens) or per token. No decoder is built, so none is
computed and init_from leaves a pretrained run's decoder behind.

Packed rows: encoder row i and decoder row i hold the same examples under the same segment
ids, so decoder segment k attends only to encoder segment k (the cross-attention mask).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from lm import layers
from lm.config import ModelConfig
from lm.models import heads


def _default_positions(segment_ids_BL, positions_BL, length_of):
    batch, length = length_of.shape
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones((batch, length), jnp.int32)
    if positions_BL is None:
        positions_BL = jnp.broadcast_to(jnp.arange(length), (batch, length))
    return segment_ids_BL, positions_BL


class T5(nn.Module):
    config: ModelConfig  # vocab_size must be resolved (non-zero) by the caller.

    def setup(self):
        cfg = self.config
        self.token_embed = layers.Embed(cfg.vocab_size, cfg)
        self.encoder = layers.TransformerStack(cfg, causal=False)
        self.encoder_norm = layers.Norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        if cfg.positions == "relative":
            self.encoder_position_bias = layers.RelativePositionBias(cfg, bidirectional=True)
        if cfg.num_classes:  # an encoder classifier: no decoder, no output projection
            self.head = heads.ClassifierHead(cfg)  # params under "head" (heads.HEAD), as every family's
            return
        decoder_config = dataclasses.replace(cfg, num_layers=cfg.num_decoder_layers or cfg.num_layers)
        self.decoder = layers.TransformerStack(decoder_config, causal=True, cross_attention=True)
        self.decoder_norm = layers.Norm(cfg)
        if cfg.positions == "relative":
            self.decoder_position_bias = layers.RelativePositionBias(cfg, bidirectional=False)
        if not cfg.tie_embeddings:
            stddev = layers.kernel_stddev(cfg, cfg.embed_dim)
            self.output = self.param("output", layers.normal_init(("embed", "vocab"), stddev),
                                     (cfg.embed_dim, cfg.vocab_size), jnp.dtype(cfg.param_dtype))

    def __call__(self, encoder_inputs_BS, decoder_inputs_BL, encoder_segment_ids_BS=None, encoder_positions_BS=None,
                 decoder_segment_ids_BL=None, decoder_positions_BL=None, deterministic: bool = True):
        """Teacher-forced logits [B, L, V] (float32). decoder_inputs are the targets shifted
        right (each segment starts with the pad id, T5's decoder start token). A classifier
        (num_classes >= 2) takes no decoder inputs (None) and returns its head's logits: [B, C]
        (classify=sequence) or [B, S, C] (token)."""
        encoder_segment_ids_BS, _ = _default_positions(encoder_segment_ids_BS, None, encoder_inputs_BS)
        if self.config.num_classes:
            if decoder_inputs_BL is not None:
                raise ValueError("a T5 classifier (model.num_classes >= 2) is its encoder alone: pass no decoder inputs")
            return self.head(self.encode(encoder_inputs_BS, encoder_segment_ids_BS, encoder_positions_BS,
                                         deterministic, final_dropout=False), encoder_segment_ids_BS, deterministic)
        encoded_BSD = self.encode(encoder_inputs_BS, encoder_segment_ids_BS, encoder_positions_BS, deterministic)
        return self.decode(encoded_BSD, encoder_segment_ids_BS, decoder_inputs_BL, decoder_segment_ids_BL,
                           decoder_positions_BL, deterministic)

    def encode(self, inputs_BS, segment_ids_BS=None, positions_BS=None, deterministic: bool = True,
               final_dropout: bool = True):
        """Encoder output [B, S, D]. A classifier's head drops out its own input
        (heads.ClassifierHead), so it asks for the states without the final dropout."""
        cfg = self.config
        segment_ids_BS, positions_BS = _default_positions(segment_ids_BS, positions_BS, inputs_BS)
        x_BSD = self.dropout(self.token_embed(inputs_BS), deterministic=deterministic)
        x_BSD = nn.with_logical_constraint(x_BSD, layers.ACTIVATION_AXES)
        mask_B1SS = layers.attention_mask(segment_ids_BS, segment_ids_BS, causal=False)
        bias_BHSS = (self.encoder_position_bias(positions_BS, positions_BS) if cfg.positions == "relative" else None)
        x_BSD = self.encoder(x_BSD, mask_B1SS, positions_BS, deterministic, bias_BHLS=bias_BHSS)
        x_BSD = self.encoder_norm(x_BSD)
        return self.dropout(x_BSD, deterministic=deterministic) if final_dropout else x_BSD

    def decode(self, encoded_BSD, encoder_segment_ids_BS, decoder_inputs_BL, decoder_segment_ids_BL=None,
               decoder_positions_BL=None, deterministic: bool = True, key_positions_BT=None):
        """Logits [B, L, V] given the encoder output. With a mutable "cache" collection
        (lm/decoding.py) L is one token and `key_positions_BT` are the T cache slots' positions,
        which the relative bias needs; otherwise keys are the decoder inputs themselves."""
        cfg = self.config
        decoder_segment_ids_BL, decoder_positions_BL = _default_positions(
            decoder_segment_ids_BL, decoder_positions_BL, decoder_inputs_BL)
        x_BLD = self.dropout(self.token_embed(decoder_inputs_BL), deterministic=deterministic)
        x_BLD = nn.with_logical_constraint(x_BLD, layers.ACTIVATION_AXES)
        mask_B1LL = layers.attention_mask(decoder_segment_ids_BL, decoder_segment_ids_BL, causal=True)
        cross_mask_B1LS = layers.attention_mask(decoder_segment_ids_BL, encoder_segment_ids_BS, causal=False)
        bias_BHLT = None
        if cfg.positions == "relative":
            keys_BT = decoder_positions_BL if key_positions_BT is None else key_positions_BT
            bias_BHLT = self.decoder_position_bias(decoder_positions_BL, keys_BT)
        x_BLD = self.decoder(x_BLD, mask_B1LL, decoder_positions_BL, deterministic, encoded_BSD=encoded_BSD,
                             cross_mask_B1LS=cross_mask_B1LS, bias_BHLS=bias_BHLT)
        x_BLD = self.dropout(self.decoder_norm(x_BLD), deterministic=deterministic)
        if cfg.scale_decoder_outputs:  # T5 v1.0: unit-scale embeddings, so the tied projection reads d**-0.5 x
            x_BLD = x_BLD * cfg.embed_dim ** -0.5
        if cfg.tie_embeddings:
            logits_BLV = self.token_embed.attend(x_BLD)
        else:
            logits_BLV = jnp.einsum("BLD,DV->BLV", x_BLD, self.output.astype(cfg.dtype),
                                    preferred_element_type=jnp.float32)
        return nn.with_logical_constraint(logits_BLV, ("batch", "length", "vocab"))
