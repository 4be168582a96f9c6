"""GPT-2 <-> our GPT family: learned positions, LayerNorm, tanh-GELU MLP, biases, tied embeddings.

GPT-2 keeps its projections in `Conv1D` modules, whose weights are already [in, out] (no
transpose), with query, key and value concatenated in one `c_attn` of width 3D.
"""

from __future__ import annotations

import numpy as np

from lm.config import ModelConfig
from lm.interop import core

MODEL_TYPES = ("gpt2",)
ARCHITECTURE = "GPT2LMHeadModel"
# Buffers older checkpoints saved beside the weights: the causal mask, not parameters.
IGNORED = (".attn.bias", ".attn.masked_bias")


def model_config(hf: dict) -> ModelConfig:
    core.require(hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
                 f"GPT-2 with activation_function={hf.get('activation_function')!r}: we model the tanh GELU "
                 f"(gelu_new) only")
    for flag, ok in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                     ("scale_attn_weights", True), ("add_cross_attention", False)):
        core.require(hf.get(flag, ok) == ok, f"GPT-2 with {flag}={hf.get(flag)!r} is not supported (only {ok})")
    width = hf["n_embd"]
    return ModelConfig(
        family="gpt", vocab_size=hf["vocab_size"], num_layers=hf["n_layer"], embed_dim=width,
        num_heads=hf["n_head"], mlp_dim=hf.get("n_inner") or 4 * width, mlp_activation="gelu",
        max_len=hf["n_positions"], positions="learned", norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), use_bias=True, tie_embeddings=True)


def _strip_prefix(tensors: dict) -> dict:
    """GPT2LMHeadModel saves `transformer.h.0...`; GPT2Model and the original hub files `h.0...`."""
    return {name.removeprefix("transformer."): value for name, value in tensors.items()}


def import_params(m: ModelConfig, raw: dict, source: str, hf: dict | None = None) -> dict:
    tensors = core.Tensors(_strip_prefix(raw), source)
    width, heads, head_dim = m.embed_dim, m.num_heads, m.embed_dim // m.num_heads

    def norm(prefix):
        return {"scale": tensors.take(f"{prefix}.weight", (width,)), "bias": tensors.take(f"{prefix}.bias", (width,))}

    params = {"token_embed": {"embedding": tensors.take("wte.weight", (m.vocab_size, width))},
              "position_embed": tensors.take("wpe.weight", (m.max_len, width)), "decoder": {},
              "final_norm": norm("ln_f")}
    for i in range(m.num_layers):
        p = f"h.{i}"
        qkv_kernel = tensors.take(f"{p}.attn.c_attn.weight", (width, 3 * width))
        qkv_bias = tensors.take(f"{p}.attn.c_attn.bias", (3 * width,))
        attention = {}
        for j, name in enumerate(("query", "key", "value")):
            attention[name] = core.split_heads(qkv_kernel[:, j * width:(j + 1) * width], heads, head_dim)
            attention[f"{name}_bias"] = qkv_bias[j * width:(j + 1) * width].reshape(heads, head_dim)
        attention["out"] = core.split_out_heads(tensors.take(f"{p}.attn.c_proj.weight", (width, width)), heads, head_dim)
        attention["out_bias"] = tensors.take(f"{p}.attn.c_proj.bias", (width,))
        mlp = {"wi": tensors.take(f"{p}.mlp.c_fc.weight", (width, m.mlp_dim)),
               "wi_bias": tensors.take(f"{p}.mlp.c_fc.bias", (m.mlp_dim,)),
               "wo": tensors.take(f"{p}.mlp.c_proj.weight", (m.mlp_dim, width)),
               "wo_bias": tensors.take(f"{p}.mlp.c_proj.bias", (width,))}
        params["decoder"][f"layer_{i}"] = {"attention_norm": norm(f"{p}.ln_1"), "self_attention": attention,
                                          "mlp_norm": norm(f"{p}.ln_2"), "mlp": mlp}
    # GPT-2 ties the output head to wte; a saved lm_head.weight is that same matrix.
    core.check_tied_head(tensors, params["token_embed"]["embedding"],
                         f"{source}: lm_head.weight differs from wte.weight, but GPT-2 ties them")
    tensors.check_all_used(IGNORED)
    return params


def check_exportable(m: ModelConfig) -> None:
    wrong = core.unsupported_settings(m, (("family", "gpt"), ("positions", "learned"), ("norm", "layernorm"),
                                          ("mlp_activation", "gelu"), ("use_bias", True), ("tie_embeddings", True)), "GPT-2")
    if (m.num_kv_heads or m.num_heads) != m.num_heads:
        wrong.append(f"model.num_kv_heads={m.num_kv_heads} (GPT-2 has no grouped-query attention)")
    if m.head_dim and m.head_dim * m.num_heads != m.embed_dim:
        wrong.append(f"model.head_dim={m.head_dim} (GPT-2 needs embed_dim / num_heads)")
    core.require(not wrong, "this model cannot be exported as GPT-2: " + "; ".join(wrong)
                 + " (try --architecture=llama for rotary/RMSNorm/SwiGLU models)")


def export(m: ModelConfig, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
    check_exportable(m)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    tensors = {"transformer.wte.weight": f32(params["token_embed"]["embedding"]),
               "transformer.wpe.weight": f32(params["position_embed"]),
               "transformer.ln_f.weight": f32(params["final_norm"]["scale"]),
               "transformer.ln_f.bias": f32(params["final_norm"]["bias"])}
    for i in range(m.num_layers):
        layer, p = params["decoder"][f"layer_{i}"], f"transformer.h.{i}"
        attention, mlp = layer["self_attention"], layer["mlp"]
        tensors[f"{p}.attn.c_attn.weight"] = np.concatenate(
            [core.merge_heads(f32(attention[n])) for n in ("query", "key", "value")], axis=1)
        tensors[f"{p}.attn.c_attn.bias"] = np.concatenate(
            [f32(attention[f"{n}_bias"]).reshape(-1) for n in ("query", "key", "value")])
        tensors[f"{p}.attn.c_proj.weight"] = core.merge_out_heads(f32(attention["out"]))
        tensors[f"{p}.attn.c_proj.bias"] = f32(attention["out_bias"])
        for ours, theirs in (("wi", "c_fc"), ("wo", "c_proj")):
            tensors[f"{p}.mlp.{theirs}.weight"] = f32(mlp[ours])
            tensors[f"{p}.mlp.{theirs}.bias"] = f32(mlp[f"{ours}_bias"])
        for ours, theirs in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
            tensors[f"{p}.{theirs}.weight"] = f32(layer[ours]["scale"])
            tensors[f"{p}.{theirs}.bias"] = f32(layer[ours]["bias"])
    hf = {"architectures": [ARCHITECTURE], "model_type": "gpt2", "vocab_size": m.vocab_size,
          "n_positions": m.max_len, "n_embd": m.embed_dim, "n_layer": m.num_layers, "n_head": m.num_heads,
          "n_inner": m.mlp_dim, "activation_function": "gelu_new", "layer_norm_epsilon": m.norm_eps,
          "resid_pdrop": m.dropout_rate, "embd_pdrop": m.dropout_rate, "attn_pdrop": m.dropout_rate,
          "tie_word_embeddings": True, "torch_dtype": "float32", "bos_token_id": None, "eos_token_id": None}
    return hf, tensors
