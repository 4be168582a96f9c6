"""Int8 weight-only post-training quantization, per output channel, for inference.

Every weight matrix becomes int8 values and one float32 scale per output channel (symmetric:
scale = max |w| / 127 over the channel's inputs), so w ~= int8 * scale. The output channel is
the axis a matmul keeps:

  query / key / value [D, H, E]  one scale per (head, head dim)   out [H, E, D]  per D
  wi, wi_gate [D, F]             per F                             wo [F, D]      per D
  token embedding [V, D]         per token (row): it is gathered by row, and as the tied
                                 output head each row is one output logit's channel
  position_embed [L, D]          per position (row)                output [D, V]  per V

What stays float: norm scales and biases (vectors: a few KB, and the most sensitive). The
embedding is quantized too, on purpose: at gpt_tiny's size it is 14% of the parameters, and
leaving it float would put the model at ~37% of its float bytes instead of ~26%.

`dequantize` runs inside the compiled program (eval step or decoding loop), so only the int8
tree need be resident; lm/generate.py does it once per call, outside the per-token loop.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# Parameter name -> (its rank, the input axes reduced into one scale per output channel).
_REDUCE_AXES = {
    "query": (3, (0,)), "key": (3, (0,)), "value": (3, (0,)), "out": (3, (0, 1)),
    "wi": (2, (0,)), "wi_gate": (2, (0,)), "wo": (2, (0,)),
    "embedding": (2, (1,)), "position_embed": (2, (1,)), "output": (2, (0,)),
}
QUANTIZED, SCALE = "int8", "int8_scale"


def _quantize_leaf(name: str, w):
    rank, axes = _REDUCE_AXES[name]
    offset = w.ndim - rank  # scanned layers (model.scan_layers) add a leading layer axis
    if offset not in (0, 1):
        raise ValueError(f"parameter {name!r} has shape {w.shape}; expected rank {rank} (or {rank + 1} when scanned)")
    w = jnp.asarray(w, jnp.float32)
    scale = jnp.max(jnp.abs(w), axis=tuple(a + offset for a in axes), keepdims=True) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero channel stays exactly zero
    values = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
    return {QUANTIZED: values, SCALE: scale}


def quantize(params):
    """Params pytree -> the same tree with each weight matrix replaced by {int8, int8_scale}."""
    def walk(tree):
        out = {}
        for name, value in tree.items():
            if isinstance(value, dict):
                out[name] = walk(value)
            elif name in _REDUCE_AXES and value.ndim >= 2:
                out[name] = _quantize_leaf(name, value)
            else:
                out[name] = value
        return out
    return walk(params)


def _is_quantized(node) -> bool:
    return isinstance(node, dict) and set(node) == {QUANTIZED, SCALE}


def dequantize(qparams, dtype=jnp.float32):
    """The float params the model computes with (jittable)."""
    def walk(tree):
        if _is_quantized(tree):
            return (tree[QUANTIZED].astype(jnp.float32) * tree[SCALE]).astype(dtype)
        if isinstance(tree, dict):
            return {name: walk(value) for name, value in tree.items()}
        return tree
    return walk(qparams)


def num_bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def save(directory: str, tree) -> int:
    """Writes a params tree (float or quantized) with orbax; returns its bytes on disk."""
    directory = os.path.abspath(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory, tree, force=True)
        checkpointer.wait_until_finished()
    return directory_bytes(directory)


def restore(directory: str):
    """A tree written by `save`, as host-local jax.Arrays."""
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(os.path.abspath(directory))


def directory_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory) for name in names)


def _tokens_per_sec(model, params, prompt_ids, max_new_tokens, prepare_params, repeats=3):
    from lm import generate, sampling  # noqa: PLC0415 (generation imports the model stack)
    gen = generate.GenerationConfig(max_new_tokens=max_new_tokens, sampler=sampling.Sampler(temperature=0))
    generate.generate(model, params, [prompt_ids], gen, prepare_params=prepare_params)  # compile
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        out = generate.generate(model, params, [prompt_ids], gen, prepare_params=prepare_params)
        best = min(best, (time.perf_counter() - started) / max(len(out.tokens[0]), 1))
    return 1.0 / best


def compare(workdir: str, step: str | int = "best", output: str = "", max_new_tokens: int = 100, log=print) -> dict:
    """Quantizes checkpoint `step` (best, latest or a step number) of `workdir` into `output` (default <workdir>/int8) and
    measures float against int8: parameter bytes in memory and on disk, validation loss and
    perplexity over the whole validation split, and batch-1 greedy decoding speed."""
    from lm import assembly, pretrained  # noqa: PLC0415
    from lm.config import DistillConfig, MeshConfig  # noqa: PLC0415

    loaded = pretrained.load(workdir, step)
    qparams = jax.jit(quantize)(loaded.params)
    output = output or os.path.join(workdir, "int8")
    results = {"step": loaded.step, "output": output}
    results["float_bytes"], results["int8_bytes"] = num_bytes(loaded.params), num_bytes(qparams)
    results["int8_disk_bytes"] = save(output, qparams)
    with tempfile.TemporaryDirectory() as scratch:  # the float params alone, saved the same way
        results["float_disk_bytes"] = save(os.path.join(scratch, "float"), loaded.params)
    log(f"parameter bytes: float {results['float_bytes']:,}, int8 {results['int8_bytes']:,} "
        f"({results['int8_bytes'] / results['float_bytes']:.1%}); on disk {results['float_disk_bytes']:,} -> "
        f"{results['int8_disk_bytes']:,}; written to {output}")

    run = assembly.build(dataclasses.replace(loaded.config, mesh=MeshConfig(), distill=DistillConfig()))
    restored = restore(output)  # evaluate what was written, not what is in memory
    for name, params in (("float", loaded.params), ("int8", jax.jit(dequantize)(restored))):
        metrics = assembly.evaluate(run, params)
        results[f"{name}_loss"], results[f"{name}_perplexity"] = metrics["eval/loss"], metrics["eval/perplexity"]
    results["perplexity_change"] = results["int8_perplexity"] / results["float_perplexity"] - 1
    log(f"validation perplexity: float {results['float_perplexity']:.3f}, int8 {results['int8_perplexity']:.3f} "
        f"({results['perplexity_change']:+.2%})")

    prompt = [loaded.tokenizer.eos_id] + loaded.tokenizer.encode("ROMEO:")
    cfg = loaded.config.model
    new = max_new_tokens if cfg.positions != "learned" else min(max_new_tokens, cfg.max_len - len(prompt))
    results["float_tokens_per_sec"] = _tokens_per_sec(loaded.model, loaded.params, prompt, new, _identity)
    results["int8_tokens_per_sec"] = _tokens_per_sec(loaded.model, restored, prompt, new, dequantize)
    log(f"greedy decoding, batch 1, {new} new tokens: float {results['float_tokens_per_sec']:,.0f} tokens/s, "
        f"int8 {results['int8_tokens_per_sec']:,.0f} tokens/s")
    return results


def _identity(params):
    return params
