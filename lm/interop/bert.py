"""BERT <-> our bert family in its post-norm shape (lm/models/bert.py).

Hugging Face's BERT is the original post-norm encoder: a LayerNorm over the summed word,
position and token-type embeddings, blocks norm(x + f(x)) with no final norm, exact (erf) GELU
("gelu") or its tanh form ("gelu_new"), LayerNorm eps 1e-12, a pooler (dense + tanh on [CLS]),
and heads on top. Ours computes the same function with `norm_position="post"`,
`embedding_norm=True` and `mlp_activation="gelu_exact"` (or "gelu"); a pre-norm model of ours
(the default) has no counterpart, so its export is refused.

By config.json's `architectures`:
  BertForPreTraining             <-> pretraining heads: MLM transform (dense, GELU, LayerNorm),
                                     decoder tied to the word embeddings plus a bias, NSP;
                                     train.objective=mlm_nsp
  BertForSequenceClassification  <-> num_classes classifier on the pooled output;
                                     train.objective=classification
  BertModel, BertForMaskedLM      -> import only: the pretraining model, with the heads (and
                                     pooler) the file lacks freshly initialised (seed 0)
Torch Linear weights are [out, in]; our kernels [in, out], attention per head as in core.py.
"""

from __future__ import annotations

import os

import numpy as np

from lm.config import ModelConfig
from lm.interop import core

MODEL_TYPES = ("bert",)
PRETRAINING, CLASSIFICATION = "BertForPreTraining", "BertForSequenceClassification"
# The parts each architecture must carry; "pooler" is optional where it is not listed.
_PARTS = {PRETRAINING: {"pooler", "mlm", "nsp"}, CLASSIFICATION: {"pooler", "classifier"},
          "BertForMaskedLM": {"mlm"}, "BertModel": set()}
_ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu"}
IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids")  # buffers some files save
NUM_CLASSES = 2  # our classification tasks (lm/data/glue.py: sst2, mrpc, rte) are all binary


def _architecture(hf: dict) -> str:
    name = (hf.get("architectures") or ["BertModel"])[0]
    core.require(name in _PARTS, f"BERT checkpoint of architecture {name!r}: we convert {', '.join(_PARTS)} "
                                 f"(other heads, e.g. question answering or token classification, have no "
                                 f"counterpart among our models)")
    return name


def _num_labels(hf: dict) -> int:
    return len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))


def model_config(hf: dict) -> ModelConfig:
    architecture = _architecture(hf)
    act = hf.get("hidden_act", "gelu")
    core.require(act in _ACTIVATIONS, f"BERT with hidden_act={act!r}: we model GELU, exact ('gelu') or tanh "
                                      f"('gelu_new', 'gelu_pytorch_tanh'), only")
    core.require(hf.get("position_embedding_type", "absolute") == "absolute",
                 f"BERT with position_embedding_type={hf.get('position_embedding_type')!r}: only absolute "
                 f"(learned) positions are supported")
    core.require(not hf.get("is_decoder") and not hf.get("add_cross_attention"),
                 "BERT configured as a decoder (is_decoder / add_cross_attention) is not supported: ours is an encoder")
    num_classes = 0
    if architecture == CLASSIFICATION:
        num_classes = _num_labels(hf)
        core.require(hf.get("problem_type") in (None, "single_label_classification") and num_classes == NUM_CLASSES,
                     f"BertForSequenceClassification with {num_classes} label(s) (problem_type "
                     f"{hf.get('problem_type')!r}): our classification tasks (sst2, mrpc, rte) are single-label "
                     f"with {NUM_CLASSES} classes")
    return ModelConfig(
        family="bert", vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], embed_dim=hf["hidden_size"],
        num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], mlp_activation=_ACTIVATIONS[act],
        max_len=hf["max_position_embeddings"], positions="learned", norm="layernorm",
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)), use_bias=True, tie_embeddings=True,
        dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)), type_vocab_size=hf.get("type_vocab_size", 2),
        num_classes=num_classes, pooling="cls", norm_position="post", embedding_norm=True)


def objective(m: ModelConfig) -> str:
    """The train.objective an imported workdir gets."""
    return "classification" if m.num_classes else "mlm_nsp"


def import_notes(hf: dict, hf_dir: str) -> list[str]:
    """What the user should know about an import: fresh heads, and WordPiece tokenizers."""
    notes = []
    architecture = _architecture(hf)
    if architecture in ("BertModel", "BertForMaskedLM"):
        fresh = "the NSP head" if architecture == "BertForMaskedLM" else "the MLM and NSP heads"
        notes.append(f"note: {architecture} has no pretraining heads of its own: {fresh} (and the pooler, if the "
                     f"file has none) start freshly initialised; fine-tune before trusting their outputs")
    if os.path.exists(os.path.join(hf_dir, "vocab.txt")) and not os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
        notes.append("note: this BERT's WordPiece comes as vocab.txt only, which our tools do not read: they take its "
                     "tokenizer.json (transformers' BertTokenizerFast.save_pretrained writes one) or a sentencepiece "
                     "model with [CLS], [SEP] and [MASK] pieces whose ids are the checkpoint's (--tokenizer=PATH). "
                     "The imported weights keep the checkpoint's vocabulary and ids; any other tokenizer makes its "
                     "embeddings meaningless")
    return notes


def _normalise_names(raw: dict) -> dict:
    """BertFor* save `bert.embeddings...`, BertModel `embeddings...`; TF-converted files name
    LayerNorm parameters gamma/beta."""
    out = {}
    for name, value in raw.items():
        name = name.removeprefix("bert.")
        if ".LayerNorm." in name:
            name = name.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")
        out[name] = value
    return out


def _fresh_params(m: ModelConfig) -> dict:
    """Our own initialisation of every parameter (for the heads a checkpoint lacks)."""
    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415

    from lm import models  # noqa: PLC0415

    variables = jax.jit(models.build(m).init)(jax.random.PRNGKey(0), np.zeros((1, 2), np.int32))
    return jax.tree.map(np.asarray, nn.meta.unbox(variables["params"]))


def import_params(m: ModelConfig, raw: dict, source: str, hf: dict) -> dict:
    tensors = core.Tensors(_normalise_names(raw), source)
    width, heads, vocab = m.embed_dim, m.num_heads, m.vocab_size
    head_dim = width // heads
    parts = _PARTS[_architecture(hf)]

    def kernel(name, out_dim, in_dim):
        return core.linear_to_kernel(tensors.take(f"{name}.weight", (out_dim, in_dim)))

    def bias(name, size):
        return tensors.take(f"{name}.bias", (size,))

    def norm(name):
        return {"scale": tensors.take(f"{name}.weight", (width,)), "bias": bias(name, width)}

    def attention(prefix):
        out = {}
        for name in ("query", "key", "value"):
            out[name] = core.split_heads(kernel(f"{prefix}.self.{name}", width, width), heads, head_dim)
            out[f"{name}_bias"] = bias(f"{prefix}.self.{name}", width).reshape(heads, head_dim)
        out["out"] = core.split_out_heads(kernel(f"{prefix}.output.dense", width, width), heads, head_dim)
        out["out_bias"] = bias(f"{prefix}.output.dense", width)
        return out

    word_embeddings = tensors.take("embeddings.word_embeddings.weight", (vocab, width))
    encoder = {"token_embed": {"embedding": word_embeddings},
               "position_embed": tensors.take("embeddings.position_embeddings.weight", (m.max_len, width)),
               "type_embed": tensors.take("embeddings.token_type_embeddings.weight", (m.type_vocab_size, width)),
               "embedding_norm": norm("embeddings.LayerNorm"), "layers": {}}
    for i in range(m.num_layers):
        p = f"encoder.layer.{i}"
        encoder["layers"][f"layer_{i}"] = {
            "self_attention": attention(f"{p}.attention"), "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
            "mlp": {"wi": kernel(f"{p}.intermediate.dense", m.mlp_dim, width),
                    "wi_bias": bias(f"{p}.intermediate.dense", m.mlp_dim),
                    "wo": kernel(f"{p}.output.dense", width, m.mlp_dim), "wo_bias": bias(f"{p}.output.dense", width)},
            "mlp_norm": norm(f"{p}.output.LayerNorm")}
    params = {"encoder": encoder}
    if "pooler" in parts or "pooler.dense.weight" in tensors:
        encoder["pooler_kernel"] = kernel("pooler.dense", width, width)
        encoder["pooler_bias"] = bias("pooler.dense", width)
    if "classifier" in parts:
        params["classifier_kernel"] = kernel("classifier", m.num_classes, width)
        params["classifier_bias"] = bias("classifier", m.num_classes)
    if "mlm" in parts:
        params["mlm_transform_kernel"] = kernel("cls.predictions.transform.dense", width, width)
        params["mlm_transform_bias"] = bias("cls.predictions.transform.dense", width)
        params["mlm_norm"] = norm("cls.predictions.transform.LayerNorm")
        params["mlm_output_bias"] = tensors.take("cls.predictions.bias", (vocab,))
        # Older files save the tied decoder (and its bias) beside what it is tied to.
        if "cls.predictions.decoder.weight" in tensors:
            core.require(np.array_equal(tensors.take("cls.predictions.decoder.weight", (vocab, width)),
                                        word_embeddings),
                         f"{source}: cls.predictions.decoder.weight differs from the word embeddings, but our "
                         f"MLM head is tied to them")
        if "cls.predictions.decoder.bias" in tensors:
            core.require(np.array_equal(tensors.take("cls.predictions.decoder.bias", (vocab,)),
                                        params["mlm_output_bias"]),
                         f"{source}: cls.predictions.decoder.bias differs from cls.predictions.bias")
    if "nsp" in parts:
        params["nsp_kernel"] = kernel("cls.seq_relationship", 2, width)
        params["nsp_bias"] = bias("cls.seq_relationship", 2)
    tensors.check_all_used(IGNORED)
    if parts != _PARTS[PRETRAINING] and not m.num_classes:  # BertModel, BertForMaskedLM: fill in fresh heads
        fresh = _fresh_params(m)
        params = {**fresh, **params, "encoder": {**fresh["encoder"], **encoder}}
    return params


def check_exportable(m: ModelConfig) -> None:
    wrong = core.unsupported_settings(m, (("family", "bert"), ("norm_position", "post"), ("embedding_norm", True),
                                          ("positions", "learned"), ("norm", "layernorm"), ("use_bias", True),
                                          ("pooling", "cls"), ("num_kv_heads", 0)), "BERT")
    if not m.num_classes and m.nsp_head != "pooled":
        wrong.append(f"model.nsp_head={m.nsp_head!r} (BERT's next-sentence head reads only the pooled vector: 'pooled')")
    if m.mlp_activation not in ("gelu", "gelu_exact"):
        wrong.append(f"model.mlp_activation={m.mlp_activation!r} (BERT needs 'gelu_exact' or 'gelu')")
    if m.head_dim and m.head_dim * m.num_heads != m.embed_dim:
        wrong.append(f"model.head_dim={m.head_dim} (BERT needs embed_dim / num_heads)")
    hint = (" Hugging Face's BERT is post-norm with an embedding LayerNorm; no mapping of weights makes a pre-norm "
            "model compute the same function: train with model.norm_position='post' and model.embedding_norm=true"
            if m.norm_position != "post" or not m.embedding_norm else "")
    core.require(not wrong, "this model cannot be exported as Hugging Face BERT: " + "; ".join(wrong) + "." + hint)


def export(m: ModelConfig, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
    check_exportable(m)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    linear = lambda x: core.kernel_to_linear(f32(x))  # noqa: E731
    encoder, tensors = params["encoder"], {}

    def put(name, weight, bias):
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = weight, f32(bias)

    def norm(name, ours):
        put(name, f32(ours["scale"]), ours["bias"])

    tensors["bert.embeddings.word_embeddings.weight"] = f32(encoder["token_embed"]["embedding"])
    tensors["bert.embeddings.position_embeddings.weight"] = f32(encoder["position_embed"])
    tensors["bert.embeddings.token_type_embeddings.weight"] = f32(encoder["type_embed"])
    norm("bert.embeddings.LayerNorm", encoder["embedding_norm"])
    for i in range(m.num_layers):
        layer, p = encoder["layers"][f"layer_{i}"], f"bert.encoder.layer.{i}"
        attention, mlp = layer["self_attention"], layer["mlp"]
        for name in ("query", "key", "value"):
            put(f"{p}.attention.self.{name}", core.kernel_to_linear(core.merge_heads(f32(attention[name]))),
                f32(attention[f"{name}_bias"]).reshape(-1))
        put(f"{p}.attention.output.dense", core.kernel_to_linear(core.merge_out_heads(f32(attention["out"]))),
            attention["out_bias"])
        norm(f"{p}.attention.output.LayerNorm", layer["attention_norm"])
        put(f"{p}.intermediate.dense", linear(mlp["wi"]), mlp["wi_bias"])
        put(f"{p}.output.dense", linear(mlp["wo"]), mlp["wo_bias"])
        norm(f"{p}.output.LayerNorm", layer["mlp_norm"])
    put("bert.pooler.dense", linear(encoder["pooler_kernel"]), encoder["pooler_bias"])
    if m.num_classes:
        put("classifier", linear(params["classifier_kernel"]), params["classifier_bias"])
    else:
        put("cls.predictions.transform.dense", linear(params["mlm_transform_kernel"]), params["mlm_transform_bias"])
        norm("cls.predictions.transform.LayerNorm", params["mlm_norm"])
        tensors["cls.predictions.bias"] = f32(params["mlm_output_bias"])
        put("cls.seq_relationship", linear(params["nsp_kernel"]), params["nsp_bias"])
    hf = {"architectures": [CLASSIFICATION if m.num_classes else PRETRAINING], "model_type": "bert",
          "vocab_size": m.vocab_size, "hidden_size": m.embed_dim, "num_hidden_layers": m.num_layers,
          "num_attention_heads": m.num_heads, "intermediate_size": m.mlp_dim,
          "hidden_act": "gelu" if m.mlp_activation == "gelu_exact" else "gelu_new",
          "hidden_dropout_prob": m.dropout_rate, "attention_probs_dropout_prob": m.dropout_rate,
          "max_position_embeddings": m.max_len, "type_vocab_size": m.type_vocab_size, "layer_norm_eps": m.norm_eps,
          "position_embedding_type": "absolute", "pad_token_id": 0, "tie_word_embeddings": True,
          "torch_dtype": "float32"}
    if m.num_classes:
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(m.num_classes)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(m.num_classes)}
    return hf, tensors
