"""Llama <-> our GPT family: rotary positions ("rotate half" layout, as in lm/layers.rotary),
RMSNorm, SwiGLU MLP, no biases, grouped-query attention, untied or tied output head.

Hugging Face Llama projections are torch.nn.Linear ([out, in]); their gate_proj is our
`wi_gate` (through SiLU), up_proj our `wi` and down_proj our `wo`.
"""

from __future__ import annotations

import numpy as np

from lm.config import ModelConfig
from lm.interop import core

MODEL_TYPES = ("llama",)
ARCHITECTURE = "LlamaForCausalLM"
IGNORED = (".rotary_emb.inv_freq",)  # a buffer some exports include; recomputed from rope_theta


def _rope_theta(hf: dict) -> float:
    """transformers 5 nests rotary settings in `rope_parameters`; older files keep `rope_theta`
    and `rope_scaling` at the top level."""
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    core.require(rope_type == "default", f"Llama with rope type {rope_type!r} (RoPE scaling) is not supported: "
                                         f"our rotary embedding is the plain one")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def model_config(hf: dict) -> ModelConfig:
    core.require(hf.get("hidden_act", "silu") == "silu", f"Llama with hidden_act={hf.get('hidden_act')!r}: "
                                                         f"our SwiGLU uses SiLU only")
    core.require(not hf.get("attention_bias", False) and not hf.get("mlp_bias", False),
                 "Llama with attention_bias or mlp_bias is not supported: our Llama shape has no biases")
    width, heads = hf["hidden_size"], hf["num_attention_heads"]
    kv_heads = hf.get("num_key_value_heads") or heads
    head_dim = hf.get("head_dim") or width // heads
    return ModelConfig(
        family="gpt", vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], embed_dim=width,
        num_heads=heads, num_kv_heads=0 if kv_heads == heads else kv_heads,
        head_dim=0 if head_dim * heads == width else head_dim, mlp_dim=hf["intermediate_size"],
        mlp_activation="swiglu", max_len=hf.get("max_position_embeddings", 2048), positions="rotary",
        rope_theta=_rope_theta(hf), norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), use_bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def _dims(m: ModelConfig):
    return m.num_heads, m.num_kv_heads or m.num_heads, m.head_dim or m.embed_dim // m.num_heads


def import_params(m: ModelConfig, raw: dict, source: str, hf: dict | None = None) -> dict:
    tensors = core.Tensors(raw, source)
    width, (heads, kv_heads, head_dim) = m.embed_dim, _dims(m)

    def kernel(name, out_dim, in_dim):
        return core.linear_to_kernel(tensors.take(name, (out_dim, in_dim)))

    params = {"token_embed": {"embedding": tensors.take("model.embed_tokens.weight", (m.vocab_size, width))},
              "decoder": {}, "final_norm": {"scale": tensors.take("model.norm.weight", (width,))}}
    for i in range(m.num_layers):
        p = f"model.layers.{i}"
        attention = {
            "query": core.split_heads(kernel(f"{p}.self_attn.q_proj.weight", heads * head_dim, width), heads, head_dim),
            "key": core.split_heads(kernel(f"{p}.self_attn.k_proj.weight", kv_heads * head_dim, width),
                                    kv_heads, head_dim),
            "value": core.split_heads(kernel(f"{p}.self_attn.v_proj.weight", kv_heads * head_dim, width),
                                      kv_heads, head_dim),
            "out": core.split_out_heads(kernel(f"{p}.self_attn.o_proj.weight", width, heads * head_dim),
                                        heads, head_dim)}
        mlp = {"wi_gate": kernel(f"{p}.mlp.gate_proj.weight", m.mlp_dim, width),
               "wi": kernel(f"{p}.mlp.up_proj.weight", m.mlp_dim, width),
               "wo": kernel(f"{p}.mlp.down_proj.weight", width, m.mlp_dim)}
        params["decoder"][f"layer_{i}"] = {
            "attention_norm": {"scale": tensors.take(f"{p}.input_layernorm.weight", (width,))},
            "self_attention": attention,
            "mlp_norm": {"scale": tensors.take(f"{p}.post_attention_layernorm.weight", (width,))}, "mlp": mlp}
    if not m.tie_embeddings:
        params["output"] = kernel("lm_head.weight", m.vocab_size, width)
    else:
        core.check_tied_head(tensors, params["token_embed"]["embedding"],
                             f"{source}: tie_word_embeddings is true but lm_head.weight differs from embed_tokens")
    tensors.check_all_used(IGNORED)
    return params


def check_exportable(m: ModelConfig) -> None:
    wrong = core.unsupported_settings(m, (("family", "gpt"), ("positions", "rotary"), ("norm", "rmsnorm"),
                                          ("mlp_activation", "swiglu"), ("use_bias", False)), "Llama")
    core.require(not wrong, "this model cannot be exported as Llama: " + "; ".join(wrong)
                 + " (try --architecture=gpt2 for learned-position/LayerNorm/GELU models)")


def export(m: ModelConfig, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
    check_exportable(m)
    heads, kv_heads, head_dim = _dims(m)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    tensors = {"model.embed_tokens.weight": f32(params["token_embed"]["embedding"]),
               "model.norm.weight": f32(params["final_norm"]["scale"])}
    if not m.tie_embeddings:
        tensors["lm_head.weight"] = core.kernel_to_linear(f32(params["output"]))
    for i in range(m.num_layers):
        layer, p = params["decoder"][f"layer_{i}"], f"model.layers.{i}"
        attention, mlp = layer["self_attention"], layer["mlp"]
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            tensors[f"{p}.self_attn.{theirs}.weight"] = core.kernel_to_linear(core.merge_heads(f32(attention[ours])))
        tensors[f"{p}.self_attn.o_proj.weight"] = core.kernel_to_linear(core.merge_out_heads(f32(attention["out"])))
        for ours, theirs in (("wi_gate", "gate_proj"), ("wi", "up_proj"), ("wo", "down_proj")):
            tensors[f"{p}.mlp.{theirs}.weight"] = core.kernel_to_linear(f32(mlp[ours]))
        tensors[f"{p}.input_layernorm.weight"] = f32(layer["attention_norm"]["scale"])
        tensors[f"{p}.post_attention_layernorm.weight"] = f32(layer["mlp_norm"]["scale"])
    hf = {"architectures": [ARCHITECTURE], "model_type": "llama", "vocab_size": m.vocab_size,
          "hidden_size": m.embed_dim, "intermediate_size": m.mlp_dim, "num_hidden_layers": m.num_layers,
          "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
          "hidden_act": "silu", "max_position_embeddings": m.max_len, "rms_norm_eps": m.norm_eps,
          "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
          "rope_theta": m.rope_theta, "attention_bias": False, "mlp_bias": False,
          "attention_dropout": m.dropout_rate, "tie_word_embeddings": m.tie_embeddings, "torch_dtype": "float32",
          "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    return hf, tensors
