"""T5 (v1.0: ReLU MLP) <-> our t5 family: RMSNorm, no biases, one relative position bias per
stack, cross-attention in the decoder, tied or untied output head.

Two differences are folded into the weights, so both sides compute the same function:
- T5 does not scale attention scores by 1/sqrt(head_dim) (its init absorbs it); our Attention
  does, so our query kernels are T5's times sqrt(head_dim).
- T5 v1.0 multiplies the decoder output by d_model**-0.5 before the shared embedding (configs
  say so with `scale_decoder_outputs`, or, before transformers 5, `tie_word_embeddings`); our
  decoder's final norm scale carries that factor. Export writes `scale_decoder_outputs: false`.
So a T5 round trip is equal up to float rounding of those factors, not bit for bit.
transformers 5 always ties T5's output head: an untied model of ours (or a T5 v1.1 file saved
with a separate lm_head) imports, but exporting an untied one is refused. T5 v1.1's gated GELU
has no counterpart in our MLPs and is refused.
"""

from __future__ import annotations

import numpy as np

from lm.config import ModelConfig
from lm.interop import core

MODEL_TYPES = ("t5",)
ARCHITECTURE = "T5ForConditionalGeneration"
OBJECTIVE = "seq2seq"  # what an imported workdir fine-tunes with (tools/train.py, tools/evaluate.py)
IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")  # copies of shared.weight


def model_config(hf: dict) -> ModelConfig:
    core.require(hf.get("feed_forward_proj", "relu") == "relu",
                 f"T5 with feed_forward_proj={hf.get('feed_forward_proj')!r}: our t5 family has the ReLU MLP of "
                 f"T5 v1.0 only (v1.1's gated GELU is not one of our MLPs)")
    width, heads, head_dim = hf["d_model"], hf["num_heads"], hf["d_kv"]
    return ModelConfig(
        family="t5", vocab_size=hf["vocab_size"], num_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"], embed_dim=width, num_heads=heads,
        head_dim=0 if head_dim * heads == width else head_dim, mlp_dim=hf["d_ff"], mlp_activation="relu",
        positions="relative", relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128), norm="rmsnorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6), use_bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def _dims(m: ModelConfig):
    return m.num_heads, m.head_dim or m.embed_dim // m.num_heads


def _scales_decoder_output(hf: dict) -> bool:
    return bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))


def import_params(m: ModelConfig, raw: dict, source: str, hf: dict) -> dict:
    tensors = core.Tensors(raw, source)
    width, (heads, head_dim) = m.embed_dim, _dims(m)
    inner = heads * head_dim

    def kernel(name, out_dim, in_dim):
        return core.linear_to_kernel(tensors.take(name, (out_dim, in_dim)))

    def attention(prefix):
        return {"query": core.split_heads(kernel(f"{prefix}.q.weight", inner, width), heads, head_dim)
                * np.float32(np.sqrt(head_dim)),
                "key": core.split_heads(kernel(f"{prefix}.k.weight", inner, width), heads, head_dim),
                "value": core.split_heads(kernel(f"{prefix}.v.weight", inner, width), heads, head_dim),
                "out": core.split_out_heads(kernel(f"{prefix}.o.weight", width, inner), heads, head_dim)}

    def norm(name):
        return {"scale": tensors.take(name, (width,))}

    def mlp(prefix):
        return {"wi": kernel(f"{prefix}.DenseReluDense.wi.weight", m.mlp_dim, width),
                "wo": kernel(f"{prefix}.DenseReluDense.wo.weight", width, m.mlp_dim)}

    params = {"token_embed": {"embedding": tensors.take("shared.weight", (m.vocab_size, width))},
              "encoder": {}, "decoder": {}, "encoder_norm": norm("encoder.final_layer_norm.weight"),
              "decoder_norm": norm("decoder.final_layer_norm.weight")}
    for stack in ("encoder", "decoder"):
        params[f"{stack}_position_bias"] = {"embedding": tensors.take(
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (m.relative_buckets, heads))}
    for i in range(m.num_layers):
        p = f"encoder.block.{i}.layer"
        params["encoder"][f"layer_{i}"] = {
            "attention_norm": norm(f"{p}.0.layer_norm.weight"), "self_attention": attention(f"{p}.0.SelfAttention"),
            "mlp_norm": norm(f"{p}.1.layer_norm.weight"), "mlp": mlp(f"{p}.1")}
    for i in range(m.num_decoder_layers or m.num_layers):
        p = f"decoder.block.{i}.layer"
        params["decoder"][f"layer_{i}"] = {
            "attention_norm": norm(f"{p}.0.layer_norm.weight"), "self_attention": attention(f"{p}.0.SelfAttention"),
            "cross_attention_norm": norm(f"{p}.1.layer_norm.weight"),
            "cross_attention": attention(f"{p}.1.EncDecAttention"),
            "mlp_norm": norm(f"{p}.2.layer_norm.weight"), "mlp": mlp(f"{p}.2")}
    if _scales_decoder_output(hf):
        params["decoder_norm"]["scale"] = params["decoder_norm"]["scale"] * np.float32(width ** -0.5)
    if m.tie_embeddings:
        core.check_tied_head(tensors, params["token_embed"]["embedding"],
                             f"{source}: tie_word_embeddings is true but lm_head.weight differs from shared.weight")
    else:
        params["output"] = kernel("lm_head.weight", m.vocab_size, width)
    tensors.check_all_used(IGNORED)
    return params


def check_exportable(m: ModelConfig) -> None:
    wrong = core.unsupported_settings(m, (("family", "t5"), ("positions", "relative"), ("norm", "rmsnorm"),
                                          ("mlp_activation", "relu"), ("use_bias", False), ("num_kv_heads", 0),
                                          ("tie_embeddings", True)), "T5")
    core.require(not wrong, "this model cannot be exported as T5: " + "; ".join(wrong))


def export(m: ModelConfig, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
    check_exportable(m)
    (heads, head_dim), width = _dims(m), m.embed_dim
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    linear = lambda x: core.kernel_to_linear(f32(x))  # noqa: E731
    tensors = {"shared.weight": f32(params["token_embed"]["embedding"]),
               "encoder.final_layer_norm.weight": f32(params["encoder_norm"]["scale"]),
               # our scale_decoder_outputs folds into the norm scale, as on import
               "decoder.final_layer_norm.weight": f32(params["decoder_norm"]["scale"])
               * np.float32(width ** -0.5 if m.scale_decoder_outputs else 1.0)}
    for stack in ("encoder", "decoder"):
        tensors[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = f32(
            params[f"{stack}_position_bias"]["embedding"])

    def attention(prefix, ours):
        tensors[f"{prefix}.q.weight"] = core.kernel_to_linear(core.merge_heads(f32(ours["query"]))
                                                              / np.float32(np.sqrt(head_dim)))
        tensors[f"{prefix}.k.weight"] = core.kernel_to_linear(core.merge_heads(f32(ours["key"])))
        tensors[f"{prefix}.v.weight"] = core.kernel_to_linear(core.merge_heads(f32(ours["value"])))
        tensors[f"{prefix}.o.weight"] = core.kernel_to_linear(core.merge_out_heads(f32(ours["out"])))

    def block(prefix, layer, names):
        for j, (norm_name, sublayer) in enumerate(names):
            tensors[f"{prefix}.{j}.layer_norm.weight"] = f32(layer[norm_name]["scale"])
            if sublayer == "mlp":
                tensors[f"{prefix}.{j}.DenseReluDense.wi.weight"] = linear(layer["mlp"]["wi"])
                tensors[f"{prefix}.{j}.DenseReluDense.wo.weight"] = linear(layer["mlp"]["wo"])
            else:
                attention(f"{prefix}.{j}.{'SelfAttention' if sublayer == 'self_attention' else 'EncDecAttention'}",
                          layer[sublayer])

    decoder_layers = m.num_decoder_layers or m.num_layers
    for i in range(m.num_layers):
        block(f"encoder.block.{i}.layer", params["encoder"][f"layer_{i}"],
              (("attention_norm", "self_attention"), ("mlp_norm", "mlp")))
    for i in range(decoder_layers):
        block(f"decoder.block.{i}.layer", params["decoder"][f"layer_{i}"],
              (("attention_norm", "self_attention"), ("cross_attention_norm", "cross_attention"), ("mlp_norm", "mlp")))
    hf = {"architectures": [ARCHITECTURE], "model_type": "t5", "vocab_size": m.vocab_size, "d_model": width,
          "d_kv": head_dim, "d_ff": m.mlp_dim, "num_layers": m.num_layers, "num_decoder_layers": decoder_layers,
          "num_heads": heads, "relative_attention_num_buckets": m.relative_buckets,
          "relative_attention_max_distance": m.relative_max_distance, "dropout_rate": m.dropout_rate,
          "layer_norm_epsilon": m.norm_eps, "feed_forward_proj": "relu", "is_encoder_decoder": True,
          "tie_word_embeddings": True, "scale_decoder_outputs": False, "decoder_start_token_id": 0, "pad_token_id": 0,
          "eos_token_id": 1, "torch_dtype": "float32"}
    return hf, tensors
