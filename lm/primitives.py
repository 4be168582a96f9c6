"""Numerical building blocks with a backward pass of their own, for every model family.

Each is a `jax.custom_vjp` because the backward autodiff derives is either slow or wrong for our
purpose on some backend, and each is tested against autodiff of its plain formula
(tests/test_performance.py):
- `dot`: a matmul in the compute dtype with float32 accumulation whose backward matmuls also
  run in the compute dtype (autodiff would hand them a float32 cotangent); on a CPU without
  bfloat16 matmul hardware the bfloat16-rounded operands are multiplied as float32 (faster there);
- `gelu_tanh` and `normalize` (LayerNorm / RMSNorm): they keep only their inputs (and the norm's
  row statistics) and compute the backward in closed form, so XLA:CPU emits one forward pass
  instead of writing intermediates out for the backward (docs/performance.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lm import hardware


_GELU_C = (2.0 / 3.141592653589793) ** 0.5


@jax.custom_vjp
def gelu_tanh(x):
    """GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = c (x + 0.044715 x^3).

    Written for XLA:CPU's fusions (docs/performance.md): the backward keeps only x and recomputes
    the slope inside the consumer's fusion, and the sigmoid form lets the forward be one
    elementwise pass. Autodiff of the formula wrote tanh and x**2 out for the backward (four
    passes over [B, L, F])."""
    return x * jax.nn.sigmoid(2 * _GELU_C * x * (1.0 + 0.044715 * x * x))


def _gelu_tanh_bwd(x, g):
    x2 = x * x
    t = jnp.tanh(_GELU_C * x * (1.0 + 0.044715 * x2))
    slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x2)
    return (g * slope,)


gelu_tanh.defvjp(lambda x: (gelu_tanh(x), x), _gelu_tanh_bwd)


def gelu(x, exact: bool = False):
    """GELU for every family: the tanh approximation above (GPT-2's, BERT's default here), or the
    exact erf form (`model.mlp_activation="gelu_exact"`, Hugging Face BERT's)."""
    return jax.nn.gelu(x, approximate=False) if exact else gelu_tanh(x)


def softcap_logits(logits, cap: float):
    """Gemma 2's soft-capping, cap * tanh(logits / cap): logits stay within +-cap, smoothly; 0: off."""
    return cap * jnp.tanh(logits / cap) if cap else logits


def dot(equation: str, x, w, dtype, out_dtype=None):
    """einsum in the compute dtype with float32 accumulation, returned in `out_dtype` (default:
    the compute dtype). Below float32 the backward pass runs in the compute dtype too (see
    `_low_precision_dot`); float32 is plain autodiff."""
    if jnp.dtype(dtype) != jnp.float32:
        return _low_precision_dot(equation, jnp.dtype(dtype), jnp.dtype(out_dtype or dtype), x, w)
    out = jnp.einsum(equation, x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)
    return out.astype(out_dtype or dtype)


def _products_in_float32(dtype) -> bool:
    """bfloat16 on a CPU without bfloat16 matmul hardware (lm/hardware.py): there XLA:CPU
    emulates bfloat16 x bfloat16 -> float32, measured 20-35% slower than multiplying the same
    bfloat16-rounded operands as float32 (a bfloat16 product is exact in float32, so the result
    is the same up to summation order). The operands stay bfloat16 in memory and in the saved
    residuals; only the matmul kernel changes."""
    return (jnp.dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu"
            and not hardware.cpu_has_bfloat16_matmul())


def _rounded_einsum(equation: str, x, w, dtype):
    """einsum of x and w rounded to `dtype`, accumulated in float32."""
    x, w = x.astype(dtype), w.astype(dtype)
    if _products_in_float32(dtype):
        x, w = x.astype(jnp.float32), w.astype(jnp.float32)
    return jnp.einsum(equation, x, w, preferred_element_type=jnp.float32)


def _operand_specs(equation: str) -> tuple[str, str, str]:
    inputs, out = equation.replace(" ", "").split("->")
    x, w = inputs.split(",")
    for name, spec, others in (("first", x, w + out), ("second", w, x + out)):
        if any(axis not in others for axis in spec):
            raise ValueError(f"dot({equation!r}): every axis of the {name} operand must also be in the other "
                             f"operand or the output (sum it out before the dot)")
    return x, w, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _low_precision_dot(equation, dtype, out_dtype, x, w):
    """Autodiff of a float32-accumulated dot hands the backward matmuls a float32 cotangent and
    bfloat16 operands, which XLA:CPU runs as float32 matmuls plus conversions. Here the cotangent
    is cast to the compute dtype first, so all three matmuls are bfloat16 x bfloat16 -> float32
    (the fast path of AVX512-BF16 CPUs, and what mixed precision means on accelerators)."""
    return _rounded_einsum(equation, x, w, dtype).astype(out_dtype)


def _low_precision_dot_fwd(equation, dtype, out_dtype, x, w):
    out = _low_precision_dot(equation, dtype, out_dtype, x, w)
    # Zero-size arrays carry the operands' dtypes: gradients come back in the dtype they went in.
    return out, (x.astype(dtype), w.astype(dtype), jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _low_precision_dot_bwd(equation, dtype, out_dtype, residuals, cotangent):
    x, w, x_dtype, w_dtype = residuals
    x_spec, w_spec, out_spec = _operand_specs(equation)
    dx = _rounded_einsum(f"{out_spec},{w_spec}->{x_spec}", cotangent, w, dtype)
    dw = _rounded_einsum(f"{x_spec},{out_spec}->{w_spec}", x, cotangent, dtype)
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


_low_precision_dot.defvjp(_low_precision_dot_fwd, _low_precision_dot_bwd)


def _normalize_fwd(x, scale, bias, centered: bool, eps: float):
    mean = jnp.mean(x, axis=-1, keepdims=True) if centered else jnp.zeros((), x.dtype)
    centred = x - mean
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
    return centred * rstd * scale + bias, (x, mean, rstd, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize(x, scale, bias, centered: bool, eps: float):
    """LayerNorm (centered) or RMSNorm of float32 x over its last axis, times scale, plus bias
    (arrays of x's last-axis size; pass zeros for no bias: its unused gradient is dropped by XLA).

    Its backward keeps x and the per-row mean and 1/std and recomputes the normalised x where
    it is needed: autodiff of the formula made XLA:CPU write x - mean and the broadcast scale
    and bias out as full [B, L, D] tensors in every norm's forward (docs/performance.md)."""
    return _normalize_fwd(x, scale, bias, centered, eps)[0]


def _normalize_bwd(centered, eps, residuals, g):
    x, mean, rstd, scale = residuals
    x_hat = (x - mean) * rstd
    g_scaled = g * scale
    inner = g_scaled - x_hat * jnp.mean(g_scaled * x_hat, axis=-1, keepdims=True)
    if centered:
        inner = inner - jnp.mean(g_scaled, axis=-1, keepdims=True)
    rows = tuple(range(x.ndim - 1))
    return rstd * inner, jnp.sum(g * x_hat, axis=rows), jnp.sum(g, axis=rows)


normalize.defvjp(_normalize_fwd, _normalize_bwd)
