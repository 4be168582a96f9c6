"""Transformer building blocks shared by every model family (GPT, BERT, T5).

Shape suffixes name tensor axes:
  B batch, L query length, S key/value length, D model width (embed), H query heads,
  K key/value heads, G query heads per key/value head (H = K * G), E head dim,
  F MLP width, V vocabulary.

Parameters carry logical axis names (`embed`, `heads`, `kv`, `mlp`, `vocab`, `layers`);
only lm/sharding.py maps them to mesh axes, so layers never see the mesh. Matmuls run in
the compute dtype and accumulate in float32.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.config import ModelConfig
from lm.positions import relative_position_bucket, rotary  # noqa: F401 (re-exported)
from lm.primitives import dot, gelu, gelu_tanh, normalize  # noqa: F401 (re-exported)

NEG_INF = -1e9  # finite, so a fully masked row (padding) gives a uniform softmax, not NaN.
ACTIVATION_AXES = ("batch", "length", "embed")


def normal_init(names, stddev=0.02):
    """Normal(0, stddev) initialiser that tags the parameter with logical axis names."""
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def kernel_stddev(config: ModelConfig, fan_in: int, residual: bool = False) -> float:
    """The init scale of a kernel reading `fan_in` features (1 for an embedding table).
    model.init="normal": 0.02, and GPT-2's depth-scaled 0.02 / sqrt(2 layers) for projections
    back into the residual stream; "fan_in": T5's 1/sqrt(fan_in), which keeps activations at
    unit scale from the embedding on."""
    if config.init == "fan_in":
        return fan_in ** -0.5
    return 0.02 / (2 * config.num_layers) ** 0.5 if residual else 0.02


def _zeros(names):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def attention_mask(q_segment_ids_BL, kv_segment_ids_BS, causal: bool):
    """Boolean [B, 1, L, S] mask, True where a query may attend to a key.

    Queries attend only within their own segment (document), so packed documents never see
    each other; segment id 0 marks padding. Causality is by index in the packed row, which
    is what matters, since positions restart at every document.
    """
    mask = q_segment_ids_BL[:, :, None] == kv_segment_ids_BS[:, None, :]
    mask &= kv_segment_ids_BS[:, None, :] != 0
    if causal:
        length_q, length_kv = q_segment_ids_BL.shape[1], kv_segment_ids_BS.shape[1]
        mask &= jnp.arange(length_q)[:, None] >= jnp.arange(length_kv)[None, :]
    return mask[:, None, :, :]


class RelativePositionBias(nn.Module):
    """T5's learned attention bias: one scalar per (bucket, head), shared by all layers of a stack."""
    config: ModelConfig
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions_BL, key_positions_BS):
        """Float32 bias [B, H, L, S] added to the attention logits."""
        cfg = self.config
        buckets_BLS = relative_position_bucket(key_positions_BS[:, None, :] - query_positions_BL[:, :, None],
                                               self.bidirectional, cfg.relative_buckets, cfg.relative_max_distance)
        table = self.param("embedding", normal_init((None, "heads")), (cfg.relative_buckets, cfg.num_heads),
                           jnp.dtype(cfg.param_dtype))
        return jnp.transpose(jnp.take(table, buckets_BLS, axis=0), (0, 3, 1, 2)).astype(jnp.float32)


def resolve_attention_impl(config: ModelConfig) -> str:
    """`model.attention_impl` with "auto" resolved: cuDNN flash attention on GPU in bfloat16 (cuDNN
    takes no float32), our einsums elsewhere (on XLA:CPU they beat jax.nn.dot_product_attention's
    XLA path; docs/performance.md). Attention dropout exists only on the einsum path."""
    if config.attention_impl != "auto":
        return config.attention_impl
    cudnn_ok = jax.default_backend() == "gpu" and config.dtype == "bfloat16" and config.dropout_rate == 0
    return "cudnn" if cudnn_ok else "einsum"


def attention_scores(q_BHLE, k_BHSE, mask_B1LS, bias_BHLS=None):
    """q k / sqrt(E) (+ bias) in float32, NEG_INF where masked: the logits of attention's softmax."""
    dt = q_BHLE.dtype
    scores_BHLS = dot("BHLE,BHSE->BHLS", q_BHLE * jnp.asarray(q_BHLE.shape[-1] ** -0.5, dt), k_BHSE, dt, jnp.float32)
    if bias_BHLS is not None:
        scores_BHLS += bias_BHLS
    return jnp.where(mask_B1LS, scores_BHLS, NEG_INF)


def repeat_kv_heads(x_BKSE, num_heads: int):
    """Grouped-query attention: each of the K key/value heads serves num_heads / K query heads."""
    groups = num_heads // x_BKSE.shape[1]
    return x_BKSE if groups == 1 else jnp.repeat(x_BKSE, groups, axis=1)


def _attend(q_BHLE, k_BHSE, v_BHSE, mask_B1LS, bias_BHLS, dropout):
    """softmax(q k / sqrt(E) + bias, masked) v, with the softmax in float32.

    The division by the softmax's sum comes after the value matmul, so it touches [B, H, L, E]
    rather than [B, H, L, S]; subtracting the row max only keeps exp in range and does not
    change the result, so it is a constant to autodiff (stop_gradient), which saves its backward."""
    dt = q_BHLE.dtype
    scores_BHLS = attention_scores(q_BHLE, k_BHSE, mask_B1LS, bias_BHLS)
    scores_BHLS -= jax.lax.stop_gradient(jnp.max(scores_BHLS, axis=-1, keepdims=True))
    weights_BHLS = jnp.exp(scores_BHLS)
    total_BHL1 = jnp.sum(weights_BHLS, axis=-1, keepdims=True)
    weights_BHLS = dropout(weights_BHLS.astype(dt)) if dropout else weights_BHLS.astype(dt)
    return (dot("BHLS,BHSE->BHLE", weights_BHLS, v_BHSE, dt, jnp.float32) / total_BHL1).astype(dt)


def dot_product_attention(q_BHLE, k_BHSE, v_BHSE, mask_B1LS, bias_BHLS=None, dropout=None, causal_block: int = 0):
    """Attention in heads-major layout: the einsum path of `Attention`.

    causal_block > 0 promises the mask is causal (self-attention without a cache, L == S): each
    block of `causal_block` queries is then scored only against keys up to the block's end, so
    fully masked key blocks are never computed (at 4 blocks, 37% fewer score/value FLOPs). Rows
    whose every key is masked (padding queries) average over their block's keys instead of all
    keys; nothing reads those rows. Falls back to one block when L does not split evenly."""
    length = q_BHLE.shape[2]
    if not causal_block or length <= causal_block or length % causal_block or k_BHSE.shape[2] != length:
        return _attend(q_BHLE, k_BHSE, v_BHSE, mask_B1LS, bias_BHLS, dropout)
    outs = []
    for end in range(causal_block, length + 1, causal_block):
        rows = slice(end - causal_block, end)
        bias = None if bias_BHLS is None else bias_BHLS[:, :, rows, :end]
        outs.append(_attend(q_BHLE[:, :, rows], k_BHSE[:, :, :end], v_BHSE[:, :, :end],
                            mask_B1LS[:, :, rows, :end], bias, dropout))
    return jnp.concatenate(outs, axis=2)


class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last axis, computed in float32."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BLD):
        cfg = self.config
        width, pdt = x_BLD.shape[-1], jnp.dtype(cfg.param_dtype)
        scale = self.param("scale", _ones(("embed",)), (width,), pdt).astype(jnp.float32)
        centered = cfg.norm == "layernorm"
        bias = (self.param("bias", _zeros(("embed",)), (width,), pdt).astype(jnp.float32)
                if centered and cfg.use_bias else jnp.zeros((width,), jnp.float32))
        return normalize(x_BLD.astype(jnp.float32), scale, bias, centered, cfg.norm_eps).astype(cfg.dtype)


class Embed(nn.Module):
    """Token embedding; `attend` reuses it as the output projection when embeddings are tied."""
    num_embeddings: int
    config: ModelConfig

    def setup(self):
        self.embedding = self.param(
            "embedding", normal_init(("vocab", "embed"), kernel_stddev(self.config, 1)),
            (self.num_embeddings, self.config.embed_dim),
            jnp.dtype(self.config.param_dtype))

    def __call__(self, ids_BL):
        return jnp.take(self.embedding, ids_BL, axis=0).astype(self.config.dtype)

    def attend(self, x_BLD):
        """Logits [B, L, V] in float32."""
        return dot("BLD,VD->BLV", x_BLD, self.embedding, self.config.dtype, jnp.float32)


class Attention(nn.Module):
    """Multi-head attention with optional grouped-query heads and rotary positions.

    Serves self-attention (inputs_kv is inputs_q) and cross-attention (inputs_kv is the
    encoder output). `bias_BHLS` adds a precomputed bias (T5's relative positions).
    """
    config: ModelConfig
    use_rotary: bool = False
    causal: bool = False  # the mask is causal (query i never sees key j > i): lets attention skip key blocks

    @nn.compact
    def __call__(self, inputs_q_BLD, inputs_kv_BSD, mask_B1LS, positions_q_BL=None, positions_kv_BS=None,
                 bias_BHLS=None, deterministic: bool = True):
        cfg = self.config
        num_heads, num_kv = cfg.num_heads, cfg.num_kv_heads or cfg.num_heads
        head_dim = cfg.head_dim or cfg.embed_dim // cfg.num_heads
        width, pdt, dt = inputs_q_BLD.shape[-1], jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)

        def projection(name, heads):
            return self.param(name, normal_init(("embed", "heads", "kv"), kernel_stddev(cfg, width)),
                              (width, heads, head_dim), pdt)

        def bias(name, heads):
            return self.param(name, _zeros(("heads", "kv")), (heads, head_dim), pdt).astype(dt)

        # Heads-major layouts ([B, H, L, E]) keep the score and value einsums plain batched
        # matmuls, which XLA:CPU runs markedly faster than the equivalent 5-D contractions.
        q_BHLE = dot("BLD,DHE->BHLE", inputs_q_BLD, projection("query", num_heads), dt)
        k_BKSE = dot("BSD,DKE->BKSE", inputs_kv_BSD, projection("key", num_kv), dt)
        v_BKSE = dot("BSD,DKE->BKSE", inputs_kv_BSD, projection("value", num_kv), dt)
        if cfg.use_bias:
            q_BHLE += bias("query_bias", num_heads)[:, None]
            k_BKSE += bias("key_bias", num_kv)[:, None]
            v_BKSE += bias("value_bias", num_kv)[:, None]
        if self.use_rotary:
            q_BHLE = rotary(q_BHLE, positions_q_BL, cfg.rope_theta)
            k_BKSE = rotary(k_BKSE, positions_kv_BS, cfg.rope_theta)
        # Cached decoding (lm/generate.py) is on when the caller makes the "cache" collection
        # mutable in `apply`; training, evaluation and `init` never do, so they are unchanged.
        if self.is_mutable_collection("cache") and not self.is_initializing() and inputs_kv_BSD is inputs_q_BLD:
            k_BKSE, v_BKSE, mask_B1LS = self._cached_keys_values(k_BKSE, v_BKSE, mask_B1LS)
        elif self.is_mutable_collection("cache") and not self.is_initializing():
            k_BKSE, v_BKSE = self._cached_cross_keys_values(k_BKSE, v_BKSE)
        if self.is_mutable_collection("intermediates"):  # asked for by diagnostics/attention_probe.py; never in training
            self.sow("intermediates", "attention_log_weights", jax.nn.log_softmax(attention_scores(
                q_BHLE, repeat_kv_heads(k_BKSE, num_heads), mask_B1LS, bias_BHLS), axis=-1))
        impl = resolve_attention_impl(cfg)
        if impl != "einsum":  # jax.nn.dot_product_attention: [B, L, H, E] layout, grouped K/V heads as they are
            out_BLHE = jax.nn.dot_product_attention(
                q_BHLE.transpose(0, 2, 1, 3), k_BKSE.transpose(0, 2, 1, 3), v_BKSE.transpose(0, 2, 1, 3),
                bias=bias_BHLS, mask=mask_B1LS, implementation=impl)
            out_BHLE = out_BLHE.transpose(0, 2, 1, 3)
        else:
            k_BKSE, v_BKSE = repeat_kv_heads(k_BKSE, num_heads), repeat_kv_heads(v_BKSE, num_heads)
            dropout = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=deterministic)
            out_BHLE = dot_product_attention(q_BHLE, k_BKSE, v_BKSE, mask_B1LS, bias_BHLS, dropout,
                                             cfg.causal_block if self.causal else 0)

        # GPT-2's scaled init of residual projections keeps the residual stream's variance flat in depth.
        out_kernel = self.param("out", normal_init(("heads", "kv", "embed"),
                                                   kernel_stddev(cfg, num_heads * head_dim, residual=True)),
                                (num_heads, head_dim, width), pdt)
        out_BLD = dot("BHLE,HED->BLD", out_BHLE, out_kernel, dt)
        if cfg.use_bias:
            out_BLD += self.param("out_bias", _zeros(("embed",)), (width,), pdt).astype(dt)
        return out_BLD

    def _cached_keys_values(self, k_BKLE, v_BKLE, mask_B1LL):
        """Writes this call's L keys/values at the cache's index and returns the whole cache
        [B, K, S, E] with its [B, 1, L, S] mask. The first call only sizes the cache (S is its
        length) and attends as usual. A key slot is valid once written by a real token (one
        that may attend to itself, so left padding never is) and visible to queries at or
        after its slot: static shapes, so one compiled step serves every position."""
        batch, _, length, _ = k_BKLE.shape
        exists = self.has_variable("cache", "key")
        key = self.variable("cache", "key", jnp.zeros, k_BKLE.shape, k_BKLE.dtype)
        value = self.variable("cache", "value", jnp.zeros, v_BKLE.shape, v_BKLE.dtype)
        valid = self.variable("cache", "valid", jnp.zeros, (batch, length), jnp.bool_)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if not exists:
            return k_BKLE, v_BKLE, mask_B1LL
        start = index.value
        key.value = jax.lax.dynamic_update_slice(key.value, k_BKLE.astype(key.value.dtype), (0, 0, start, 0))
        value.value = jax.lax.dynamic_update_slice(value.value, v_BKLE.astype(value.value.dtype), (0, 0, start, 0))
        real_BL = jnp.diagonal(mask_B1LL[:, 0], axis1=1, axis2=2)
        valid.value = jax.lax.dynamic_update_slice(valid.value, real_BL, (0, start))
        index.value = start + length
        slots_LS = jnp.arange(key.value.shape[2])[None, :] <= start + jnp.arange(length)[:, None]
        return key.value, value.value, valid.value[:, None, None, :] & slots_LS[None, None]


    def _cached_cross_keys_values(self, k_BKSE, v_BKSE):
        """Cross-attention keys/values depend only on the encoder output: the first decoding
        call stores them and later calls read them back (XLA then drops the unused projections)."""
        exists = self.has_variable("cache", "cross_key")
        key = self.variable("cache", "cross_key", lambda: k_BKSE)
        value = self.variable("cache", "cross_value", lambda: v_BKSE)
        return (key.value, value.value) if exists else (k_BKSE, v_BKSE)


class Mlp(nn.Module):
    """GELU MLP (tanh approximation, or exact: erf), ReLU (T5.1.0), or SwiGLU (a gated linear unit
    with SiLU) as in Llama."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BLD, deterministic: bool = True):
        cfg = self.config
        width, hidden, pdt, dt = x_BLD.shape[-1], cfg.mlp_dim, jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)

        def kernel(name, shape, names, residual=False):
            return self.param(name, normal_init(names, kernel_stddev(cfg, shape[0], residual)), shape, pdt)

        def bias(name, size, axis):
            return self.param(name, _zeros((axis,)), (size,), pdt).astype(dt) if cfg.use_bias else 0.0

        h_BLF = dot("BLD,DF->BLF", x_BLD, kernel("wi", (width, hidden), ("embed", "mlp")), dt)
        h_BLF += bias("wi_bias", hidden, "mlp")
        if cfg.mlp_activation == "swiglu":
            gate_BLF = dot("BLD,DF->BLF", x_BLD, kernel("wi_gate", (width, hidden), ("embed", "mlp")), dt)
            h_BLF = nn.silu(gate_BLF + bias("wi_gate_bias", hidden, "mlp")) * h_BLF
        elif cfg.mlp_activation == "relu":
            h_BLF = nn.relu(h_BLF)
        else:
            h_BLF = gelu(h_BLF, exact=cfg.mlp_activation == "gelu_exact")
        h_BLF = nn.with_logical_constraint(h_BLF, ("batch", "length", "mlp"))
        h_BLF = nn.Dropout(cfg.dropout_rate)(h_BLF, deterministic=deterministic)
        out_kernel = kernel("wo", (hidden, width), ("mlp", "embed"), residual=True)
        return dot("BLF,FD->BLD", h_BLF, out_kernel, dt) + bias("wo_bias", width, "embed")


class TransformerBlock(nn.Module):
    """Block: self-attention, optional cross-attention (T5's decoder), MLP; each sublayer f is
    pre-norm, x + f(norm(x)), or with `norm_position="post"` (the original BERT) norm(x + f(x)).
    The norms keep their names either way: `<sublayer>_norm` is the one around that sublayer."""
    config: ModelConfig
    causal: bool = True
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x_BLD, mask_B1LS, positions_BL, deterministic: bool = True,
                 encoded_BSD=None, cross_mask_B1LS=None, bias_BHLS=None):
        cfg = self.config
        drop = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=deterministic)
        post = cfg.norm_position == "post"
        pre_norm = lambda name, x: x if post else Norm(cfg, name=name)(x)  # noqa: E731
        post_norm = lambda name, x: Norm(cfg, name=name)(x) if post else x  # noqa: E731
        h = pre_norm("attention_norm", x_BLD)
        h = Attention(cfg, use_rotary=cfg.positions == "rotary", causal=self.causal, name="self_attention")(
            h, h, mask_B1LS, positions_BL, positions_BL, bias_BHLS, deterministic)
        x_BLD = post_norm("attention_norm", x_BLD + drop(h))
        if self.cross_attention:
            h = pre_norm("cross_attention_norm", x_BLD)
            h = Attention(cfg, name="cross_attention")(h, encoded_BSD, cross_mask_B1LS, deterministic=deterministic)
            x_BLD = post_norm("cross_attention_norm", x_BLD + drop(h))
        h = pre_norm("mlp_norm", x_BLD)
        x_BLD = post_norm("mlp_norm", x_BLD + drop(Mlp(cfg, name="mlp")(h, deterministic)))
        return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)


_REMAT_POLICIES: dict[str, Callable | None] = {
    "full": None,  # save nothing: recompute the whole block in the backward pass.
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class TransformerStack(nn.Module):
    """`num_layers` blocks, as a Python loop or an `nn.scan` (compile time flat in depth),
    each optionally rematerialised by the named policy."""
    config: ModelConfig
    causal: bool = True
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x_BLD, mask_B1LS, positions_BL, deterministic: bool = True,
                 encoded_BSD=None, cross_mask_B1LS=None, bias_BHLS=None):
        cfg = self.config
        block_cls = TransformerBlock
        if cfg.remat != "none":
            block_cls = nn.remat(block_cls, policy=_REMAT_POLICIES[cfg.remat], static_argnums=(4,))
        extra = (positions_BL, deterministic, encoded_BSD, cross_mask_B1LS, bias_BHLS)
        if not cfg.scan_layers:
            for i in range(cfg.num_layers):
                x_BLD = block_cls(cfg, self.causal, self.cross_attention, name=f"layer_{i}")(x_BLD, mask_B1LS, *extra)
            return x_BLD

        def body(block, carry, mask, *rest):
            return block(carry, mask, *rest), None

        scanned = nn.scan(
            body, variable_axes={"params": 0, "cache": 0, "intermediates": 0}, split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * 6, length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"})
        x_BLD, _ = scanned(block_cls(cfg, self.causal, self.cross_attention, name="layers"), x_BLD, mask_B1LS, *extra)
        return x_BLD
