"""Fast generation for decoder models: a static key/value cache and one compiled decoding loop.

Prompts of different lengths share a batch by left padding to a common length P: every row's
prompt ends at slot P - 1 of a [B, P + max_new_tokens] buffer, padding slots are never attended
to, and each row's positions count from its own first token, so a row decodes exactly as it
would alone. The prompt is run once (prefill) into the per-layer caches of lm/layers.py's
Attention; then a `lax.while_loop` feeds one token per step. It compiles once per (batch, P,
max_new_tokens, sampler): never per token, and a host loop may resume it chunk by chunk to
stream text (`stream_every`) without recompiling, since the chunk end is a traced value.

`cached=False` runs the same loop but recomputes the whole buffer with the plain model at every
step: the reference the cache is tested against, and the baseline of tools/bench_generate.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm import sampling
from lm.config import ConfigError, ModelConfig


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    sampler: sampling.Sampler = sampling.Sampler()
    seed: int = 0
    stop_ids: tuple[int, ...] = ()  # a row stops at the first of these (it is not returned).
    cached: bool = True
    pad_id: int = 0


@dataclasses.dataclass
class Output:
    tokens: list[list[int]]  # the new ids of each row, the stop token excluded
    stopped: list[bool]  # whether each row met a stop token
    logits: np.ndarray | None = None  # [B, max_new_tokens, V] float32, with return_logits


def check_request(model_config: ModelConfig, prompt_lengths: Sequence[int], gen: GenerationConfig) -> None:
    """Errors a request would otherwise hit inside tracing (or silently, as clamped positions)."""
    if not prompt_lengths or min(prompt_lengths) < 1:
        raise ConfigError("every prompt needs at least one token (an empty prompt list or prompt was given)")
    if gen.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={gen.max_new_tokens} must be at least 1")
    gen.sampler.check(model_config.vocab_size)
    longest = max(prompt_lengths)
    if model_config.positions == "learned" and longest + gen.max_new_tokens > model_config.max_len:
        raise ConfigError(
            f"the longest prompt ({longest} tokens) plus max_new_tokens={gen.max_new_tokens} is {longest + gen.max_new_tokens}, "
            f"more than model.max_len={model_config.max_len} (the learned position table): shorten the prompt or "
            f"lower max_new_tokens to at most {max(model_config.max_len - longest, 0)}")


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """(tokens, positions, segment ids), each int32 [B, P]: prompts right-aligned, positions
    counting from each prompt's first token, segment 1 on real tokens and 0 on padding."""
    width = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    positions = np.zeros_like(tokens)
    segments = np.zeros_like(tokens)
    for row, prompt in enumerate(prompts):
        start = width - len(prompt)
        tokens[row, start:] = prompt
        positions[row, start:] = np.arange(len(prompt))
        segments[row, start:] = 1
    return tokens, positions, segments


@functools.lru_cache(maxsize=32)
def _compiled(model, gen: GenerationConfig, return_logits: bool, prepare_params: Callable):
    """(start, resume): jitted prefill and decoding loop for this model and these settings.
    jit itself caches per shape; this caches the closures so repeated calls reuse them."""
    stop_ids = jnp.asarray(gen.stop_ids or (-1,), jnp.int32)

    def forward(params, tokens, positions, segments, cache):
        if cache is None:
            return model.apply({"params": params}, tokens, positions, segments), None
        logits, variables = model.apply({"params": params, "cache": cache}, tokens, positions, segments,
                                        mutable=["cache"])
        return logits, variables["cache"]

    def start(params, prompt_BP, positions_BP, segments_BP, rng):
        params = prepare_params(params)
        batch, width = prompt_BP.shape
        tokens_BS = jnp.concatenate([prompt_BP, jnp.full((batch, gen.max_new_tokens), gen.pad_id, jnp.int32)], 1)
        lengths_B1 = jnp.sum(segments_BP > 0, axis=1, keepdims=True)
        positions_BS = jnp.concatenate([positions_BP, lengths_B1 + jnp.arange(gen.max_new_tokens)], 1)
        segments_BS = jnp.concatenate([segments_BP, jnp.ones((batch, gen.max_new_tokens), jnp.int32)], 1)
        cache = None
        if gen.cached:
            shapes = jax.eval_shape(lambda: model.apply({"params": params}, tokens_BS, positions_BS, segments_BS,
                                                        mutable=["cache"])[1]["cache"])
            cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            logits, cache = forward(params, prompt_BP, positions_BP, segments_BP, cache)
        else:
            logits, _ = forward(params, tokens_BS, positions_BS, segments_BS, None)
        vocab = logits.shape[-1]
        return {
            "tokens": tokens_BS, "positions": positions_BS, "segments": segments_BS, "cache": cache,
            "logits": logits[:, width - 1], "step": jnp.zeros((), jnp.int32), "rng": rng,
            "done": jnp.zeros((batch,), bool), "stopped": jnp.zeros((batch,), bool),
            "num_new": jnp.zeros((batch,), jnp.int32),
            "all_logits": jnp.zeros((batch, gen.max_new_tokens, vocab) if return_logits else (0,), jnp.float32),
        }

    def resume(params, carry, stop_at):
        """Decodes until `stop_at` new tokens (traced, so any chunk size reuses this program),
        max_new_tokens, or every row has stopped."""
        params = prepare_params(params)  # outside the loop body: once per call, not per token
        width = carry["tokens"].shape[1] - gen.max_new_tokens

        def body(c):
            rng, key = jax.random.split(c["rng"])
            token_B = sampling.choose(c["logits"], key, gen.sampler)
            is_stop_B = jnp.isin(token_B, stop_ids) & ~c["done"]
            token_B = jnp.where(c["done"] | is_stop_B, gen.pad_id, token_B)
            slot = width + c["step"]
            tokens = jax.lax.dynamic_update_slice(c["tokens"], token_B[:, None], (0, slot))
            if return_logits:
                c["all_logits"] = jax.lax.dynamic_update_slice(c["all_logits"], c["logits"][:, None], (0, c["step"], 0))
            if gen.cached:  # feed just the new token; the cache holds everything before it
                at = lambda x: jax.lax.dynamic_slice_in_dim(x, slot, 1, axis=1)  # noqa: E731
                logits, cache = forward(params, token_B[:, None], at(c["positions"]), at(c["segments"]), c["cache"])
                next_logits = logits[:, 0]
            else:  # recompute the whole prefix; slots after `slot` are masked out causally
                logits, cache = forward(params, tokens, c["positions"], c["segments"], None)
                next_logits = jax.lax.dynamic_index_in_dim(logits, slot, axis=1, keepdims=False)
            return dict(c, tokens=tokens, cache=cache, logits=next_logits, step=c["step"] + 1, rng=rng,
                        done=c["done"] | is_stop_B, stopped=c["stopped"] | is_stop_B,
                        num_new=c["num_new"] + (~(c["done"] | is_stop_B)).astype(jnp.int32))

        def cond(c):
            return (c["step"] < jnp.minimum(stop_at, gen.max_new_tokens)) & ~jnp.all(c["done"])

        return jax.lax.while_loop(cond, body, carry)

    return jax.jit(start), jax.jit(resume, donate_argnums=(1,))


def _identity(params):
    return params


def generate(model, params, prompts: Sequence[Sequence[int]], gen: GenerationConfig, *, return_logits: bool = False,
             stream_every: int = 0, on_tokens: Callable[[list[list[int]]], None] | None = None,
             prepare_params: Callable = _identity) -> Output:
    """Continues each prompt (a list of token ids) by up to `gen.max_new_tokens` ids.

    stream_every > 0 decodes in chunks of that many tokens and calls `on_tokens` with every
    row's new ids so far after each chunk. `prepare_params` runs inside the compiled program
    on `params` (e.g. int8 dequantization), so only its input needs to be resident."""
    check_request(model.config, [len(p) for p in prompts], gen)
    start, resume = _compiled(model, gen, return_logits, prepare_params)
    tokens, positions, segments = left_pad(prompts, gen.pad_id)
    carry = start(params, tokens, positions, segments, jax.random.PRNGKey(gen.seed))
    chunk = stream_every if stream_every > 0 else gen.max_new_tokens
    done_steps = 0
    while True:
        done_steps += chunk
        carry = resume(params, carry, jnp.int32(done_steps))
        step, all_done = jax.device_get((carry["step"], jnp.all(carry["done"])))
        if on_tokens is not None:
            on_tokens(_new_tokens(carry, tokens.shape[1]))
        if step >= gen.max_new_tokens or all_done:
            break
    out = Output(_new_tokens(carry, tokens.shape[1]), [bool(s) for s in jax.device_get(carry["stopped"])])
    if return_logits:
        out.logits = np.asarray(carry["all_logits"])
    return out


def _new_tokens(carry, width: int) -> list[list[int]]:
    tokens, num_new = jax.device_get((carry["tokens"][:, width:], carry["num_new"]))
    return [row[:n].tolist() for row, n in zip(tokens, num_new)]


def generate_text(model, params, tokenizer, prompts: Sequence[str], gen: GenerationConfig, *,
                  stream: Callable[[str], None] | None = None, stream_every: int = 4,
                  prepare_params: Callable = _identity) -> list[str]:
    """Text in, continuations out. Each prompt is preceded by EOS, which opens a document in
    training. With `stream`, the first row's text is passed to it piece by piece as decoded."""
    ids = [[tokenizer.eos_id] + tokenizer.encode(p) for p in prompts]
    gen = dataclasses.replace(gen, stop_ids=gen.stop_ids or (tokenizer.eos_id,), pad_id=tokenizer.pad_id)
    shown = ""

    def on_tokens(rows):
        nonlocal shown
        text = tokenizer.decode(rows[0])
        if text.startswith(shown):  # a partial multi-byte piece may decode differently until complete
            stream(text[len(shown):])
            shown = text

    out = generate(model, params, ids, gen, stream_every=stream_every if stream else 0,
                   on_tokens=on_tokens if stream else None, prepare_params=prepare_params)
    texts = [tokenizer.decode(row) for row in out.tokens]
    if stream and texts[0] != shown and texts[0].startswith(shown):
        stream(texts[0][len(shown):])
    return texts
