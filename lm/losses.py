"""Losses as pure functions of logits, targets and weights.

Each returns sums and the weight count rather than means, so microbatches, devices and
evaluation batches combine exactly (mean = total sum / total count)."""

import jax
import jax.numpy as jnp


def nll_and_correct(logits_BLC, labels_BL):
    """Per prediction, over any leading axes: (NLL in nats, 1.0 where the label's logit is the
    largest, the log-normaliser), all float32. Every objective's cross-entropy goes through here.

    One max serves the log-normaliser's range and the accuracy (a label whose logit reaches the
    max is a hit; an exact tie counts as one), which saves argmax's extra pass over [B, L, V].
    The max cancels out of logsumexp, so autodiff may treat it as a constant."""
    logits_BLC = logits_BLC.astype(jnp.float32)
    max_logit_BL = jax.lax.stop_gradient(jnp.max(logits_BLC, axis=-1))
    log_normalizer_BL = max_logit_BL + jnp.log(jnp.sum(jnp.exp(logits_BLC - max_logit_BL[..., None]), axis=-1))
    target_logit_BL = jnp.take_along_axis(logits_BLC, labels_BL[..., None], axis=-1)[..., 0]
    correct_BL = (target_logit_BL >= max_logit_BL).astype(jnp.float32)
    return log_normalizer_BL - target_logit_BL, correct_BL, log_normalizer_BL


def cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss: float = 0.0):
    """Next-token cross-entropy in float32, masked by `weights` (0 on padding).

    Returns {"loss_sum": summed NLL in nats, "z_loss_sum": summed z-loss penalty,
    "correct": summed weight of argmax hits (ties count), "weight": summed weights}. The z-loss
    (z_loss * logsumexp^2, from PaLM) keeps the softmax normaliser near 1 for stability."""
    nll_BL, correct_BL, log_normalizer_BL = nll_and_correct(logits_BLV, targets_BL)
    return {
        "loss_sum": jnp.sum(nll_BL * weights_BL),
        "z_loss_sum": z_loss * jnp.sum(jnp.square(log_normalizer_BL) * weights_BL),
        "correct": jnp.sum(correct_BL * weights_BL),
        "weight": jnp.sum(weights_BL),
    }
