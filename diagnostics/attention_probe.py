"""How much a T5 model's attention actually looks at anything: the entropy of every attention
layer's weights next to the entropy of uniform attention over the same keys, plus the output
distribution's confidence. docs/t5.md uses it to show why span-corruption pretraining here did
not transfer: its encoder self-attention and cross-attention stay uniform, so the pretrained
model is a decoder language model that never reads its input.

Every `layers.Attention` sows its log-weights into the "intermediates" collection when the caller
makes it mutable (training never does), so the probe reads the weights the model computed, with
its rotary or relative positions, grouped-query heads and masks, scanned layers or not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lm import layers


def attention_entropy(log_weights_BHLS):
    """(entropy of the attention weights [B, H, L], entropy of uniform weights over the same
    unmasked keys [B, H, L]), in nats. Masked keys carry log-weights near layers.NEG_INF."""
    entropy_BHL = -jnp.sum(jnp.exp(log_weights_BHLS) * log_weights_BHLS, axis=-1)
    keys_BHL = jnp.sum(log_weights_BHLS > layers.NEG_INF / 2, axis=-1)
    return entropy_BHL, jnp.log(jnp.maximum(keys_BHL, 1).astype(jnp.float32))


def sown_attention(intermediates):
    """{(stack, layer index, "self" | "cross"): log-weights [B, H, L, S]} from the collection
    `layers.Attention` sows into; a scanned stack's weights are split back into layers."""
    found = {}
    for path, value in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        names = [str(getattr(key, "key", "")) for key in path]
        if "attention_log_weights" not in names:
            continue
        stack = names[0]
        kind = "cross" if "cross_attention" in names else "self"
        layer = next((n for n in names if n.startswith("layer_")), None)
        if layer is not None:
            found[(stack, int(layer[len("layer_"):]), kind)] = value
        else:  # nn.scan stacks the layers on a leading axis
            for index in range(value.shape[0]):
                found[(stack, index, kind)] = value[index]
    return found


def probe(model, params, batch) -> dict[str, float]:
    """On one packed seq2seq batch (lm/data/seq2seq.py rows): target NLL and accuracy, the mean
    per-token logit standard deviation and top probability, and for every attention layer
    "<stack>.layer_<i>.<self|cross>" its mean entropy and "...uniform" the uniform baseline,
    averaged over heads and real (non-padding) queries."""
    b = {name: jnp.asarray(value) for name, value in batch.items()}
    logits, state = model.apply({"params": params}, b["encoder_inputs"], b["decoder_inputs"],
                                b["encoder_segment_ids"], b["encoder_positions"], b["decoder_segment_ids"],
                                b["decoder_positions"], mutable=["intermediates"])
    real_targets = np.asarray(b["decoder_weights"]) > 0
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, b["decoder_targets"][..., None], axis=-1)[..., 0]
    result = {"nll": nll, "accuracy": jnp.argmax(logits, -1) == b["decoder_targets"],
              "logit_std": jnp.std(logits, axis=-1), "max_prob": jnp.max(jnp.exp(log_probs), axis=-1)}
    result = {name: float(np.asarray(value)[real_targets].mean()) for name, value in result.items()}

    real_queries = {"encoder": np.asarray(b["encoder_segment_ids"]) > 0,
                    "decoder": np.asarray(b["decoder_segment_ids"]) > 0}
    for (stack, index, kind), log_weights in sorted(sown_attention(state["intermediates"]).items()):
        entropy, uniform = attention_entropy(log_weights)
        key = f"{stack}.layer_{index}.{kind}"
        result[key] = float(np.asarray(entropy.mean(axis=1))[real_queries[stack]].mean())
        result[key + ".uniform"] = float(np.asarray(uniform.mean(axis=1))[real_queries[stack]].mean())
    return result
