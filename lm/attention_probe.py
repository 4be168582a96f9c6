"""How much a T5 model's attention actually looks at anything: the entropy of every attention
layer's weights next to the entropy of uniform attention over the same keys, plus the output
distribution's confidence. docs/t5.md uses it to show why span-corruption pretraining here did
not transfer: its encoder self-attention and cross-attention stay uniform, so the pretrained
model is a decoder language model that never reads its input.

The weights are recomputed from the captured inputs of each attention layer (the pre-norm
outputs) and its query/key kernels, exactly as lm/layers.py scores them; the layers themselves
stay free of probing code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lm import layers


def attention_entropy(queries_in_BLD, keys_in_BSD, attention_params, mask_B1LS, bias_BHLS=None):
    """(entropy of the attention weights [B, H, L], entropy of uniform weights over the same
    unmasked keys [B, H, L]), in nats."""
    query_BHLE = jnp.einsum("BLD,DHE->BHLE", queries_in_BLD, attention_params["query"])
    key_BHSE = jnp.einsum("BSD,DHE->BHSE", keys_in_BSD, attention_params["key"])
    scores_BHLS = jnp.einsum("BHLE,BHSE->BHLS", query_BHLE, key_BHSE) * query_BHLE.shape[-1] ** -0.5
    if bias_BHLS is not None:
        scores_BHLS += bias_BHLS
    log_weights = jax.nn.log_softmax(jnp.where(mask_B1LS, scores_BHLS, layers.NEG_INF), axis=-1)
    entropy_BHL = -jnp.sum(jnp.exp(log_weights) * log_weights, axis=-1)
    uniform_B1L = jnp.log(jnp.maximum(jnp.sum(mask_B1LS, axis=-1), 1))
    return entropy_BHL, jnp.broadcast_to(uniform_B1L, entropy_BHL.shape)


def probe(model_config, model, params, batch) -> dict[str, float]:
    """On one packed seq2seq batch (lm/data/seq2seq.py rows): target NLL and accuracy, the mean
    per-token logit standard deviation and top probability, and for every attention layer
    "<stack>.layer_<i>.<self|cross>" its mean entropy and "...uniform" the uniform baseline,
    averaged over heads and real (non-padding) queries."""
    if model_config.scan_layers:
        raise ValueError("the attention probe reads each layer's captured inputs: probe a model with "
                         "model.scan_layers=false")
    b = {name: jnp.asarray(value) for name, value in batch.items()}
    logits, state = model.apply({"params": params}, b["encoder_inputs"], b["decoder_inputs"],
                                b["encoder_segment_ids"], b["encoder_positions"], b["decoder_segment_ids"],
                                b["decoder_positions"], capture_intermediates=True, mutable=["intermediates"])
    captured = state["intermediates"]
    out = lambda *path: _get(captured, path)  # noqa: E731
    real_targets = np.asarray(b["decoder_weights"]) > 0
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, b["decoder_targets"][..., None], axis=-1)[..., 0]
    result = {"nll": nll, "accuracy": jnp.argmax(logits, -1) == b["decoder_targets"],
              "logit_std": jnp.std(logits, axis=-1), "max_prob": jnp.max(jnp.exp(log_probs), axis=-1)}
    result = {name: float(np.asarray(value)[real_targets].mean()) for name, value in result.items()}

    encoder_segments, decoder_segments = b["encoder_segment_ids"], b["decoder_segment_ids"]
    relative = model_config.positions == "relative"
    stacks = {"encoder": (model_config.num_layers, encoder_segments, False),
              "decoder": (model_config.num_decoder_layers or model_config.num_layers, decoder_segments, True)}
    for stack, (depth, segments, causal) in stacks.items():
        mask = layers.attention_mask(segments, segments, causal=causal)
        bias = out(f"{stack}_position_bias") if relative else None
        real_queries = np.asarray(segments) > 0
        for i in range(depth):
            names = [("self", "attention_norm", "self_attention", None)]
            if stack == "decoder":
                names.append(("cross", "cross_attention_norm", "cross_attention", out("encoder_norm")))
            for kind, norm, attention, keys_in in names:
                queries_in = out(stack, f"layer_{i}", norm)
                kind_mask = mask if kind == "self" else layers.attention_mask(segments, encoder_segments, causal=False)
                entropy, uniform = attention_entropy(queries_in, queries_in if keys_in is None else keys_in,
                                                     params[stack][f"layer_{i}"][attention], kind_mask,
                                                     bias if kind == "self" else None)
                key = f"{stack}.layer_{i}.{kind}"
                result[key] = float(np.asarray(entropy.mean(axis=1))[real_queries].mean())
                result[key + ".uniform"] = float(np.asarray(uniform.mean(axis=1))[real_queries].mean())
    return result


def _get(captured, path):
    node = captured
    for name in path:
        node = node[name]
    return node["__call__"][0]
