"""Cached, compiled generation (lm/generate.py, lm/sampling.py, tools/generate.py).

The reference is the plain model recomputing the whole prefix at every step (cached=False):
the cache must give the same logits, hence the same greedy tokens, for learned and rotary
positions, grouped-query heads and scanned layers; a left-padded batch must equal each prompt alone."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import generate, models, pretrained, sampling

from conftest import REPO

pytestmark = pytest.mark.generate

GREEDY = sampling.Sampler(temperature=0)
PROMPTS = [[3, 11, 17, 5, 29, 8], [3, 40], [3, 9, 9, 21, 33, 14, 6, 45, 12, 7]]
VARIANTS = {
    "learned": {},
    "rotary_gqa": {"positions": "rotary", "num_kv_heads": 2, "norm": "rmsnorm", "mlp_activation": "swiglu"},
    "scanned_remat": {"scan_layers": True, "remat": "full"},
}


def _model(**overrides):
    cfg = config_lib.ModelConfig(vocab_size=61, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, max_len=32,
                                 **overrides)
    model = models.build(cfg)
    return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_decoding_matches_recomputing_the_prefix(variant):
    model, params = _model(**VARIANTS[variant])
    gen = generate.GenerationConfig(max_new_tokens=12, sampler=GREEDY)
    cached = generate.generate(model, params, PROMPTS, gen, return_logits=True)
    full = generate.generate(model, params, PROMPTS, generate.GenerationConfig(max_new_tokens=12, sampler=GREEDY,
                                                                               cached=False), return_logits=True)
    assert cached.logits.shape == (3, 12, 61)
    np.testing.assert_allclose(cached.logits, full.logits, atol=1e-4, rtol=1e-4)
    assert cached.tokens == full.tokens and all(len(row) == 12 for row in cached.tokens)
    # and the reference really is the model: its first step is one forward pass over the prompt alone
    first = model.apply({"params": params}, jnp.asarray([PROMPTS[1]]))[0, -1]
    np.testing.assert_allclose(full.logits[1, 0], first, atol=1e-5)


def test_mixed_length_batch_equals_each_prompt_alone():
    model, params = _model(positions="rotary")
    gen = generate.GenerationConfig(max_new_tokens=10, sampler=GREEDY)
    batch = generate.generate(model, params, PROMPTS, gen, return_logits=True)
    for row, prompt in enumerate(PROMPTS):
        alone = generate.generate(model, params, [prompt], gen, return_logits=True)
        assert alone.tokens[0] == batch.tokens[row]
        np.testing.assert_allclose(alone.logits[0], batch.logits[row], atol=1e-4)


def test_sampling_settings():
    model, params = _model()
    greedy = generate.generate(model, params, PROMPTS, generate.GenerationConfig(16, GREEDY)).tokens
    for narrow in (sampling.Sampler(1.0, top_k=1), sampling.Sampler(1.0, top_p=1e-6)):
        assert generate.generate(model, params, PROMPTS, generate.GenerationConfig(16, narrow, seed=3)).tokens == greedy
    hot = sampling.Sampler(temperature=1.5)
    first = generate.generate(model, params, PROMPTS, generate.GenerationConfig(16, hot, seed=1)).tokens
    assert generate.generate(model, params, PROMPTS, generate.GenerationConfig(16, hot, seed=1)).tokens == first
    assert generate.generate(model, params, PROMPTS, generate.GenerationConfig(16, hot, seed=2)).tokens != first

    logits = jnp.log(jnp.asarray([[0.4, 0.3, 0.2, 0.06, 0.04]] * 2000))
    draws = sampling.choose(logits, jax.random.PRNGKey(0), sampling.Sampler(1.0, top_k=3))
    assert set(np.unique(draws)) == {0, 1, 2}
    draws = sampling.choose(logits, jax.random.PRNGKey(0), sampling.Sampler(1.0, top_p=0.65))
    assert set(np.unique(draws)) == {0, 1}  # 0.4 < 0.65 <= 0.4 + 0.3


def test_stop_tokens_end_rows_and_the_loop_compiles_once():
    model, params = _model()
    free = generate.generate(model, params, PROMPTS, generate.GenerationConfig(12, GREEDY)).tokens
    stop = free[0][4]
    gen = generate.GenerationConfig(12, GREEDY, stop_ids=(stop,))
    out = generate.generate(model, params, PROMPTS, gen)
    for row, tokens in zip(free, out.tokens):
        cut = row.index(stop) if stop in row else len(row)
        assert tokens == row[:cut]
    assert out.stopped[0]
    start, resume = generate._compiled(model, gen, False, generate._identity)
    sizes = start._cache_size(), resume._cache_size()
    streamed = []
    chunked = generate.generate(model, params, PROMPTS, gen, stream_every=3, on_tokens=streamed.append)
    assert chunked.tokens == out.tokens and len(streamed) >= 2
    assert (start._cache_size(), resume._cache_size()) == sizes == (1, 1)  # new chunk ends: no recompile


def test_bad_requests_fail_before_compiling():
    model, params = _model()
    with pytest.raises(config_lib.ConfigError, match="model.max_len=32"):
        generate.generate(model, params, [[3] * 30], generate.GenerationConfig(8, GREEDY))
    with pytest.raises(config_lib.ConfigError, match="top_p"):
        generate.generate(model, params, PROMPTS, generate.GenerationConfig(8, sampling.Sampler(1.0, top_p=0.0)))
    with pytest.raises(config_lib.ConfigError, match="at least one token"):
        generate.generate(model, params, [[]], generate.GenerationConfig(8, GREEDY))


def test_generate_tool_prints_the_continuation(trained_tiny_workdir):
    loaded = pretrained.load(trained_tiny_workdir)
    by_path = pretrained.load(os.path.join(trained_tiny_workdir, "checkpoints", str(loaded.step)))
    assert by_path.step == loaded.step and by_path.workdir == os.path.normpath(trained_tiny_workdir)
    gen = generate.GenerationConfig(20, GREEDY, stop_ids=(loaded.tokenizer.eos_id,))
    expected = generate.generate_text(loaded.model, loaded.params, loaded.tokenizer, ["ROMEO:"], gen)[0]
    streamed = []
    assert generate.generate_text(loaded.model, loaded.params, loaded.tokenizer, ["ROMEO:"], gen,
                                  stream=streamed.append, stream_every=3)[0] == expected == "".join(streamed)
    result = subprocess.run(
        [sys.executable, "tools/generate.py", f"--checkpoint={trained_tiny_workdir}/checkpoints/{loaded.step}",
         "--prompt=ROMEO:", "--max_new_tokens=20", "--temperature=0", "--top_k=5", "--top_p=0.9"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert expected and result.stdout == "ROMEO:" + expected + "\n"  # the prompt, then its continuation
    too_long = subprocess.run(
        [sys.executable, "tools/generate.py", f"--workdir={trained_tiny_workdir}", "--prompt=ROMEO:",
         "--max_new_tokens=500"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert too_long.returncode != 0 and "model.max_len=64" in too_long.stderr
