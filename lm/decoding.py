"""Decoding for encoder-decoder models: greedy and beam search, batched and jit-compiled.

The encoder runs once. The decoder then feeds one token per step inside a `lax.while_loop`
(one compile per batch shape and settings, never per token), reading its past keys/values
from lm/layers.py's static-shape cache; the cross-attention keys/values are computed once,
on the call that sizes the cache, and read back at every step. A row stops at EOS; the loop
stops when every row (every beam) has. `cached=False` recomputes the whole decoder prefix at
every step instead: the reference the cache is tested against.

Beam search keeps, per row, `beam_size` live hypotheses (ranked by log-probability) and the
`beam_size` best finished ones (ranked by log-probability / ((5 + length) / 6) **
length_penalty, GNMT's normalisation); it stops once no live hypothesis can beat the worst
finished one. With beam_size=1 and length_penalty=0 it returns the greedy output.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lm.config import Seq2SeqConfig

_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    max_len: int = 64  # decoder tokens, EOS included
    beam_size: int = 1
    length_penalty: float = 0.6
    cached: bool = True

    @classmethod
    def from_config(cls, s2s: Seq2SeqConfig) -> "DecodeConfig":
        return cls(max_len=s2s.target_len, beam_size=s2s.beam_size, length_penalty=s2s.length_penalty)


def _encode(model, params, inputs_BS, segments_BS):
    return model.apply({"params": params}, inputs_BS, segments_BS, method=model.encode)


def _step_fn(model, params, encoded_BSD, segments_BS, max_len: int):
    """(init_cache(), step(cache, token_B, position) -> (log-probs [B, V], cache))."""
    batch = encoded_BSD.shape[0]
    slots_BT = jnp.broadcast_to(jnp.arange(max_len), (batch, max_len))

    def run(variables, tokens_BL, positions_BL):
        return model.apply(variables, encoded_BSD, segments_BS, tokens_BL, None, positions_BL,
                           key_positions_BT=slots_BT, mutable=["cache"], method=model.decode)

    def init_cache():
        # Sizes the self-attention caches to max_len and fills the cross-attention ones.
        _, variables = run({"params": params}, jnp.zeros((batch, max_len), jnp.int32), slots_BT)
        return variables["cache"]

    def step(cache, token_B, position):
        logits, variables = run({"params": params, "cache": cache}, token_B[:, None],
                                jnp.full((batch, 1), position, jnp.int32))
        return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)), variables["cache"]

    return init_cache, step


def _uncached_step_fn(model, params, encoded_BSD, segments_BS, max_len: int):
    """The same interface, recomputing the decoder over the whole buffer every step."""
    batch = encoded_BSD.shape[0]

    def init_cache():
        return jnp.zeros((batch, max_len), jnp.int32)  # the "cache" is the decoder input buffer

    def step(buffer_BT, token_B, position):
        buffer_BT = jax.lax.dynamic_update_slice(buffer_BT, token_B[:, None], (0, position))
        logits = model.apply({"params": params}, encoded_BSD, segments_BS, buffer_BT, method=model.decode)
        logits_BV = jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False)
        return jax.nn.log_softmax(logits_BV.astype(jnp.float32)), buffer_BT

    return init_cache, step


@functools.partial(jax.jit, static_argnames=("model", "config"))
def greedy(model, params, inputs_BS, segments_BS, *, config: DecodeConfig, start_id: int, eos_id: int):
    """(tokens [B, max_len] int32: EOS then `start_id` padding after it, log-probability of
    each chosen token [B, max_len] (0 after EOS))."""
    batch, max_len = inputs_BS.shape[0], config.max_len
    encoded = _encode(model, params, inputs_BS, segments_BS)
    make = _step_fn if config.cached else _uncached_step_fn
    init_cache, step = make(model, params, encoded, segments_BS, max_len)

    def body(carry):
        position, tokens, scores, cache, previous, done = carry
        logp_BV, cache = step(cache, previous, position)
        token = jnp.where(done, start_id, jnp.argmax(logp_BV, axis=-1).astype(jnp.int32))
        score = jnp.where(done, 0.0, jnp.take_along_axis(logp_BV, token[:, None], axis=-1)[:, 0])
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, position))
        scores = jax.lax.dynamic_update_slice(scores, score[:, None], (0, position))
        return position + 1, tokens, scores, cache, token, done | (token == eos_id)

    def cond(carry):
        return (carry[0] < max_len) & ~jnp.all(carry[5])

    carry = (jnp.int32(0), jnp.full((batch, max_len), start_id, jnp.int32), jnp.zeros((batch, max_len), jnp.float32),
             init_cache(), jnp.full((batch,), start_id, jnp.int32), jnp.zeros((batch,), bool))
    _, tokens, scores, *_ = jax.lax.while_loop(cond, body, carry)
    return tokens, scores


def _length_norm(length, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def _gather_beams(tree, origin_BW, batch: int, beam: int):
    """Reorders every cache leaf's [B * W] rows by origin beam. The rows are the leading axis, or
    the second in a scanned stack (`model.scan_layers`: the layer axis leads); the write indices
    have no rows and stay."""
    flat = (origin_BW + jnp.arange(batch)[:, None] * beam).reshape(-1)

    def gather(path, x):
        axis = 1 if any(getattr(key, "key", None) == "layers" for key in path) else 0
        return x if x.ndim <= axis else jnp.take(x, flat, axis=axis)

    return jax.tree_util.tree_map_with_path(gather, tree)


@functools.partial(jax.jit, static_argnames=("model", "config"))
def beam_search(model, params, inputs_BS, segments_BS, *, config: DecodeConfig, start_id: int, eos_id: int):
    """(tokens [B, max_len] of the best hypothesis per row, EOS then `start_id` padding, and
    its normalised score [B])."""
    batch, beam, max_len, alpha = inputs_BS.shape[0], config.beam_size, config.max_len, config.length_penalty
    repeat = lambda x: jnp.repeat(x, beam, axis=0)  # noqa: E731 - rows become [B * W] beams
    encoded = _encode(model, params, inputs_BS, segments_BS)
    make = _step_fn if config.cached else _uncached_step_fn
    init_cache, step = make(model, params, repeat(encoded), repeat(segments_BS), max_len)

    def body(carry):
        (position, alive, alive_logp, finished, finished_score, cache, previous) = carry
        logp, cache = step(cache, previous.reshape(-1), position)
        vocab = logp.shape[-1]
        candidates = (alive_logp[:, :, None] + logp.reshape(batch, beam, vocab)).reshape(batch, beam * vocab)
        top_logp, top_index = jax.lax.top_k(candidates, 2 * beam)  # >= beam of them are not EOS
        origin, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        sequences = jnp.take_along_axis(alive, origin[:, :, None], axis=1)
        sequences = jax.lax.dynamic_update_slice(sequences, token[:, :, None], (0, 0, position))
        is_eos = token == eos_id
        # Live: the best non-EOS continuations. At the last position nothing stays live.
        live_logp, live_pick = jax.lax.top_k(jnp.where(is_eos, _NEG, top_logp), beam)
        alive = jnp.take_along_axis(sequences, live_pick[:, :, None], axis=1)
        origin = jnp.take_along_axis(origin, live_pick, axis=1)
        cache = _gather_beams(cache, origin, batch, beam)
        # Finished: the best of the old finished and this step's EOS candidates, normalised by length.
        new_score = jnp.where(is_eos, top_logp / _length_norm(position + 1.0, alpha), _NEG)
        pool_score = jnp.concatenate([finished_score, new_score], axis=1)
        pool = jnp.concatenate([finished, sequences], axis=1)
        finished_score, pick = jax.lax.top_k(pool_score, beam)
        finished = jnp.take_along_axis(pool, pick[:, :, None], axis=1)
        previous = jnp.take_along_axis(token, live_pick, axis=1)
        return position + 1, alive, live_logp, finished, finished_score, cache, previous

    def cond(carry):
        position, _, alive_logp, _, finished_score, _, _ = carry
        best_possible = alive_logp[:, 0] / _length_norm(jnp.float32(max_len), alpha) if alpha > 0 else alive_logp[:, 0]
        beaten = jnp.all(finished_score[:, -1] > best_possible)
        return (position < max_len) & ~beaten

    first = jnp.where(jnp.arange(beam) == 0, 0.0, _NEG)  # all beams start equal: expand only the first
    carry = (jnp.int32(0), jnp.full((batch, beam, max_len), start_id, jnp.int32), jnp.tile(first, (batch, 1)),
             jnp.full((batch, beam, max_len), start_id, jnp.int32), jnp.full((batch, beam), _NEG),
             init_cache(), jnp.full((batch, beam), start_id, jnp.int32))
    _, alive, alive_logp, finished, finished_score, _, _ = jax.lax.while_loop(cond, body, carry)
    # A row with no finished hypothesis (every beam ran to max_len) returns its best live one.
    alive_score = alive_logp[:, 0] / _length_norm(jnp.float32(max_len), alpha)
    use_finished = finished_score[:, 0] > _NEG / 2
    tokens = jnp.where(use_finished[:, None], finished[:, 0], alive[:, 0])
    return tokens, jnp.where(use_finished, finished_score[:, 0], alive_score)


def decode(model, params, inputs_BS, segments_BS, config: DecodeConfig, start_id: int, eos_id: int) -> np.ndarray:
    """Token ids [B, max_len] by greedy (beam_size 1) or beam search."""
    fn = greedy if config.beam_size == 1 else beam_search
    tokens, _ = fn(model, params, inputs_BS, segments_BS, config=config, start_id=start_id, eos_id=eos_id)
    return np.asarray(tokens)


def strip(row, eos_id: int) -> list[int]:
    """The ids before the first EOS."""
    row = list(row)
    return row[:row.index(eos_id)] if eos_id in row else row


def encoder_batch(ids: list[list[int]], input_len: int, pad_id: int, eos_id: int, batch_size: int):
    """(inputs, segment ids) int32 [batch_size, input_len]: one example a row (truncated,
    ending in EOS), rows past len(ids) empty."""
    inputs = np.full((batch_size, input_len), pad_id, np.int32)
    segments = np.zeros((batch_size, input_len), np.int32)
    for row, example in enumerate(ids):
        example = list(example[:input_len - 1]) + [eos_id]
        inputs[row, :len(example)] = example
        segments[row, :len(example)] = 1
    return inputs, segments


def decode_texts(model, params, tokenizer, texts: list[str], config: DecodeConfig, input_len: int | None = None,
                 batch_size: int = 0) -> list[str]:
    """Decoded text for every input text, in batches of a fixed shape (one compile)."""
    ids = tokenizer.encode_batch(texts)
    input_len = input_len or max(len(i) for i in ids) + 1
    batch_size = batch_size or len(texts)
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        inputs, segments = encoder_batch(chunk, input_len, tokenizer.pad_id, tokenizer.eos_id, batch_size)
        tokens = decode(model, params, inputs, segments, config, tokenizer.pad_id, tokenizer.eos_id)
        out.extend(tokenizer.decode(strip(row, tokenizer.eos_id)) for row in tokens[:len(chunk)])
    return out
