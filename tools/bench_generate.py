"""Generation throughput: cached against uncached decoding, at batch 1 and 8, in one run.

  python tools/bench_generate.py [--configs=gpt_tiny,gpt2_small] [--batch_sizes=1,8] \
      [--new_tokens=256] [--prompt_len=16] [--json=FILE] [--markdown=FILE]

Each config's model is built at its own shapes with random weights (speed does not depend on
what the weights say) and `model.max_len` raised to hold the prompt plus the new tokens. Greedy
decoding with no stop token, so every row really produces `new_tokens` tokens. Compilation is
timed apart; the figure is new tokens per second over the whole request (prefill included),
the best of `--repeats`.

The uncached loop (lm/generate.py, cached=False) recomputes the full fixed-size buffer at every
step, so every step costs the same: it is timed over its first `--uncached_steps` steps with the
very program a full request runs, and the rate is exact, not extrapolated from another shape.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from lm import cli  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["gpt_tiny", "gpt2_small"], "Config modules under configs/.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Prompts decoded together.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 256, "New tokens per prompt.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 16, "Tokens per prompt.")
_UNCACHED_STEPS = flags.DEFINE_integer("uncached_steps", 16, "Steps timed for the uncached loop (see above).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats; the best is reported.")
_JSON = flags.DEFINE_string("json", "", "Write every figure to this JSON file.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Append the markdown table to this file.")


def model_for(name: str, new_tokens: int, prompt_len: int):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from lm import config as config_lib, models  # noqa: PLC0415

    config = config_lib.from_config_dict(importlib.import_module(f"configs.{name}").get_config())
    vocab = config.model.vocab_size or config.tokenizer.vocab_size
    model_config = dataclasses.replace(config.model, vocab_size=vocab, dropout_rate=0.0, scan_layers=False,
                                       remat="none", max_len=max(config.model.max_len, prompt_len + new_tokens))
    model = models.build(model_config)
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])()
    num_params = sum(x.size for x in jax.tree.leaves(params))
    return model, params, num_params


def time_request(model, params, batch: int, gen, steps: int, repeats: int) -> tuple[float, float]:
    """(compile seconds, best new tokens/s) for `steps` decoding steps of a `batch`-row request."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from lm import generate  # noqa: PLC0415

    start, resume = generate._compiled(model, gen, False, generate._identity)  # noqa: SLF001 (to stop early)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, model.config.vocab_size, _PROMPT_LEN.value).tolist() for _ in range(batch)]
    tokens, positions, segments = generate.left_pad(prompts, gen.pad_id)

    def request():
        carry = start(params, tokens, positions, segments, jax.random.PRNGKey(0))
        carry = resume(params, carry, jnp.int32(steps))
        assert int(carry["step"]) == steps
        return carry

    began = time.perf_counter()
    request()
    compile_seconds = time.perf_counter() - began
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        request()
        best = min(best, time.perf_counter() - began)
    return compile_seconds, batch * steps / best


def main(argv):
    del argv
    from diagnostics import benchmark  # noqa: PLC0415
    from lm import generate, sampling  # noqa: PLC0415

    rows = []
    for name in _CONFIGS.value:
        model, params, num_params = model_for(name, _NEW_TOKENS.value, _PROMPT_LEN.value)
        for batch in map(int, _BATCH_SIZES.value):
            for cached in (True, False):
                gen = generate.GenerationConfig(max_new_tokens=_NEW_TOKENS.value, cached=cached,
                                                sampler=sampling.Sampler(temperature=0.0))
                steps = _NEW_TOKENS.value if cached else min(_UNCACHED_STEPS.value, _NEW_TOKENS.value)
                compile_s, rate = time_request(model, params, batch, gen, steps, _REPEATS.value)
                row = {"config": name, "params": num_params, "batch": batch, "cached": cached,
                       "new_tokens": _NEW_TOKENS.value, "timed_steps": steps, "prompt_len": _PROMPT_LEN.value,
                       "compile_seconds": round(compile_s, 2), "tokens_per_sec": round(rate, 1)}
                rows.append(row)
                print(f"{name} ({num_params / 1e6:.1f}M params) batch {batch} {'cached' if cached else 'uncached'}: "
                      f"{rate:,.1f} new tokens/s (compile {compile_s:.1f} s, {steps} steps timed)", flush=True)
    table = ["| config | batch | cached tokens/s | uncached tokens/s | speed-up |", "| --- | --- | --- | --- | --- |"]
    for c in rows[::2]:
        u = next(r for r in rows if r["config"] == c["config"] and r["batch"] == c["batch"] and not r["cached"])
        table.append(f"| {c['config']} ({c['params'] / 1e6:.1f}M) | {c['batch']} | {c['tokens_per_sec']:,.1f} | "
                     f"{u['tokens_per_sec']:,.1f} | {c['tokens_per_sec'] / u['tokens_per_sec']:.1f}x |")
    benchmark.write_report(table, rows, _JSON.value, _MARKDOWN.value)


if __name__ == "__main__":
    cli.run(main)
