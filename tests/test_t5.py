"""The T5 family: encoder-decoder model, relative position bias, span corruption, seq2seq data,
decoding (greedy, beam, cache) and BLEU/ROUGE scoring."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import decoding, evaluation, layers, models
from lm.data import seq2seq as seq2seq_data
from lm.data import span_corruption as spans

pytestmark = pytest.mark.t5

TINY = config_lib.ModelConfig(family="t5", vocab_size=97, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
                              positions="relative", norm="rmsnorm", mlp_activation="relu", use_bias=False,
                              relative_buckets=8, relative_max_distance=16)


def init(cfg=TINY):
    model = models.build(cfg)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32),
                                               jnp.zeros((1, 8), jnp.int32))["params"])
    return model, params


@pytest.mark.parametrize("name,expected", [("t5_small", 60_506_624), ("t5_base", 222_903_552)])
def test_parameter_counts_match_t5_1_0(name, expected):
    """T5.1.0 small and base with tied embeddings and the 32,128 vocabulary, as released."""
    import importlib

    config = config_lib.from_config_dict(importlib.import_module(f"configs.{name}").get_config())
    model = models.build(config.model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32),
                                               jnp.zeros((1, 4), jnp.int32)))
    assert sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected


def test_relative_position_buckets():
    relative = jnp.array([[[0, -1, 1, -7, -8, -127, -128, -1000, 3, 200]]])
    both = np.asarray(layers.relative_position_bucket(relative, True, 32, 128))[0, 0]
    # 16 buckets a direction: 8 exact distances, then log-spaced to 128; keys after the query offset by 16.
    np.testing.assert_array_equal(both, [0, 1, 17, 7, 8, 15, 15, 15, 19, 31])
    past = np.asarray(layers.relative_position_bucket(relative, False, 32, 128))[0, 0]
    np.testing.assert_array_equal(past[:3], [0, 1, 0])  # the decoder never looks ahead: future -> bucket 0
    assert past[3] == 7 and past[7] == 31 and past[-1] == 0


def test_cross_attention_mask_pairs_segments_and_ignores_padding():
    decoder_segments = jnp.array([[1, 1, 2, 0]])
    encoder_segments = jnp.array([[1, 2, 2, 0, 0]])
    mask = np.asarray(layers.attention_mask(decoder_segments, encoder_segments, causal=False))[0, 0]
    np.testing.assert_array_equal(mask, np.array([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 1, 0, 0],
                                                  [0, 0, 0, 0, 0]], bool))


@pytest.mark.parametrize("positions", ["relative", "rotary"])
def test_packed_examples_equal_each_example_alone(positions):
    """Two (input, target) pairs packed in one row give the logits each gives alone: the
    encoder mask, the causal decoder mask and the cross-attention mask all respect segments."""
    model, params = init(dataclasses.replace(TINY, positions=positions))
    rng = np.random.default_rng(0)
    a_in, a_out, b_in, b_out = (rng.integers(4, 97, n).astype(np.int32) for n in (5, 4, 7, 6))
    row = seq2seq_data.pack_rows([(a_in, a_out), (b_in, b_out)], 14, 12, pad_id=0)
    batch = {k: jnp.asarray(v)[None] for k, v in row.items()}
    apply = jax.jit(model.apply)  # one compile per shape: much faster than op-by-op here
    packed = apply({"params": params}, batch["encoder_inputs"], batch["decoder_inputs"],
                         batch["encoder_segment_ids"], batch["encoder_positions"], batch["decoder_segment_ids"],
                         batch["decoder_positions"])

    def alone(inputs, targets):
        return apply({"params": params}, jnp.asarray(inputs)[None],
                           jnp.asarray(np.concatenate([[0], targets[:-1]]))[None])[0]

    np.testing.assert_allclose(packed[0, :4], alone(a_in, a_out), atol=1e-5)
    np.testing.assert_allclose(packed[0, 4:10], alone(b_in, b_out), atol=1e-5)


def test_encoder_is_bidirectional_and_decoder_is_causal():
    model, params = init()
    rng = np.random.default_rng(1)
    inputs, decoder = jnp.asarray(rng.integers(4, 97, (1, 8))), jnp.asarray(rng.integers(4, 97, (1, 8)))
    apply = jax.jit(model.apply)
    base = apply({"params": params}, inputs, decoder)
    later_input = apply({"params": params}, inputs.at[0, 7].set(3), decoder)
    assert not np.allclose(base[0, 0], later_input[0, 0])  # every target position sees the whole input
    later_target = apply({"params": params}, inputs, decoder.at[0, 5:].set(3))
    np.testing.assert_allclose(base[0, :5], later_target[0, :5], atol=1e-6)
    assert not np.allclose(base[0, 5:], later_target[0, 5:])


def test_span_lengths_match_t5_for_512_inputs():
    lengths = spans.lengths_for_inputs(512, 0.15, 3.0)
    assert (lengths.raw, lengths.noise, lengths.spans, lengths.inputs, lengths.targets) == (568, 85, 28, 512, 114)


def test_span_corruption_round_trip_and_statistics():
    lengths = spans.lengths_for_inputs(128, 0.15, 3.0)
    sentinels = np.arange(900, 1000, dtype=np.int32)
    rng = np.random.default_rng(0)
    noise_fraction, span_lengths = [], []
    for _ in range(300):
        tokens = rng.integers(4, 800, lengths.raw).astype(np.int32)
        tokens[rng.integers(0, lengths.raw, 2)] = 3  # windows of the stream hold the EOS between documents
        mask = spans.noise_mask(lengths, rng)
        inputs, targets = spans.corrupt(tokens, mask, sentinels, eos_id=3)
        assert len(inputs) == lengths.inputs == 128 and len(targets) == lengths.targets
        assert inputs[-1] == 3 and targets[-1] == 3 and targets[0] == sentinels[0]
        np.testing.assert_array_equal(spans.reconstruct(inputs, targets, sentinels, 3), tokens)
        assert not mask[0]  # kept text comes first
        noise_fraction.append(mask.mean())
        starts = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])) == 1)
        ends = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])) == -1)
        assert len(starts) == lengths.spans
        span_lengths.extend(ends - starts)
    assert np.mean(noise_fraction) == pytest.approx(0.15, abs=0.005)
    assert np.mean(span_lengths) == pytest.approx(3.0, abs=0.1)
    assert len(set(span_lengths)) > 3  # random lengths, not a fixed one


def test_parallel_files_and_json_lines_make_packed_rows(tmp_path):
    import gzip
    import json

    with gzip.open(tmp_path / "train.en.gz", "wt") as f:
        f.write("A dog runs.\nTwo men talk.\n")
    with gzip.open(tmp_path / "train.de.gz", "wt") as f:
        f.write("Ein Hund rennt.\nZwei Männer reden.\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps({"dialogue": "#P1#: hi\n#P2#: hello", "summary": "They greet."}))
    config = config_lib.from_config_dict({
        "model": {"family": "t5", "positions": "relative"}, "train": {"objective": "seq2seq"},
        "data": {"train_files": str(tmp_path / "train.{key}.gz")},
        "seq2seq": {"input_key": "en", "target_key": "de", "input_prefix": "en-de: "}})
    assert seq2seq_data.read_split(config, "train") == [("en-de: A dog runs.", "Ein Hund rennt."),
                                                        ("en-de: Two men talk.", "Zwei Männer reden.")]
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, validation_files=str(tmp_path / "dev.jsonl")),
                                 seq2seq=dataclasses.replace(config.seq2seq, input_key="dialogue", target_key="summary",
                                                             input_prefix=""))
    assert seq2seq_data.read_split(config, "validation") == [("#P1#: hi\n#P2#: hello", "They greet.")]
    pairs = seq2seq_data.Pairs([np.array([5, 6, 3]), np.array([7, 3]), np.array([8, 9, 10, 3])],
                               [np.array([11, 3]), np.array([12, 13, 3]), np.array([14, 3])], [])
    plan = seq2seq_data.plan_rows(pairs, [0, 1, 2], input_len=6, target_len=6)
    assert plan == [[0, 1], [2]]
    row = seq2seq_data.PackedRows(pairs, plan, 6, 6, pad_id=0)[0]
    np.testing.assert_array_equal(row["encoder_segment_ids"], [1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(row["decoder_inputs"], [0, 11, 0, 12, 13, 0])
    np.testing.assert_array_equal(row["decoder_targets"], [11, 3, 12, 13, 3, 0])
    np.testing.assert_array_equal(row["decoder_positions"], [0, 1, 0, 1, 2, 0])
    np.testing.assert_array_equal(row["decoder_weights"], [1, 1, 1, 1, 1, 0])


@pytest.mark.parametrize("name,keys", [("wmt14_translate/de-en", ("en", "de")),
                                       ("cnn_dailymail", ("article", "highlights"))])
def test_tfds_datasets_by_name(name, keys):
    import tensorflow_datasets as tfds

    config = config_lib.from_config_dict({
        "model": {"family": "t5", "positions": "relative"}, "train": {"objective": "seq2seq"},
        "data": {"tfds_name": name}, "seq2seq": {"input_key": keys[0], "target_key": keys[1]}})
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        pairs = seq2seq_data.read_split(config, "validation")
    assert len(pairs) == 5 and all(isinstance(a, str) and a and isinstance(b, str) and b for a, b in pairs)


def _encoder_batch(batch=3, length=9):
    rng = np.random.default_rng(2)
    ids = [list(rng.integers(4, 97, n)) for n in (8, 5, 3)][:batch]
    return decoding.encoder_batch(ids, length, pad_id=0, eos_id=3, batch_size=batch)


GREEDY = decoding.DecodeConfig(max_len=10, length_penalty=0.0)


def test_cached_decoding_equals_uncached():
    model, params = init()
    inputs, segments = _encoder_batch()
    cached = decoding.greedy(model, params, inputs, segments, config=GREEDY, start_id=0, eos_id=3)
    uncached = decoding.greedy(model, params, inputs, segments, config=dataclasses.replace(GREEDY, cached=False),
                               start_id=0, eos_id=3)
    np.testing.assert_array_equal(cached[0], uncached[0])
    np.testing.assert_allclose(cached[1], uncached[1], atol=1e-5)


@pytest.mark.slow
def test_cached_beam_search_equals_uncached():
    model, params = init()
    inputs, segments = _encoder_batch()
    beam = dataclasses.replace(GREEDY, beam_size=3, length_penalty=0.6)
    cached = decoding.beam_search(model, params, inputs, segments, config=beam, start_id=0, eos_id=3)
    uncached = decoding.beam_search(model, params, inputs, segments, config=dataclasses.replace(beam, cached=False),
                                    start_id=0, eos_id=3)
    np.testing.assert_array_equal(cached[0], uncached[0])
    np.testing.assert_allclose(cached[1], uncached[1], atol=1e-5)


def test_beam_of_one_equals_greedy_and_rows_stop_at_eos():
    model, params = init()
    inputs, segments = _encoder_batch()
    # A random model rarely picks a given EOS: take as EOS the token row 0 picks third, so
    # that row (and any other picking it) must stop there.
    eos = int(np.asarray(decoding.greedy(model, params, inputs, segments, config=GREEDY, start_id=0,
                                         eos_id=3)[0])[0, 2])
    greedy_tokens, greedy_scores = decoding.greedy(model, params, inputs, segments, config=GREEDY, start_id=0,
                                                   eos_id=eos)
    beam_tokens, beam_scores = decoding.beam_search(model, params, inputs, segments, config=GREEDY, start_id=0,
                                                    eos_id=eos)
    np.testing.assert_array_equal(beam_tokens, greedy_tokens)
    np.testing.assert_allclose(beam_scores, np.asarray(greedy_scores).sum(axis=1), atol=1e-4)
    row = np.asarray(greedy_tokens)[0].tolist()
    assert row.index(eos) <= 2 and all(t == 0 for t in row[row.index(eos) + 1:])  # padding after EOS
    wide = decoding.beam_search(model, params, inputs, segments, config=dataclasses.replace(GREEDY, beam_size=4),
                                start_id=0, eos_id=eos)
    assert (np.asarray(wide[1]) >= np.asarray(beam_scores) - 1e-4).all()  # a wider beam never scores worse here


@pytest.mark.slow  # ~20 s on 2 cores: the default suite stays near 15 minutes
def test_scanned_layers_decode_as_unrolled():
    """model.scan_layers stacks each cache on a leading layer axis: beam search must reorder its rows there."""
    from lm.interop import core

    scanned_model, params = init(dataclasses.replace(TINY, scan_layers=True))
    model, _ = init(TINY)
    inputs = np.random.default_rng(0).integers(2, TINY.vocab_size, (2, 9)).astype(np.int32)
    for search, config in ((decoding.greedy, GREEDY), (decoding.beam_search, dataclasses.replace(GREEDY, beam_size=3))):
        ours = search(scanned_model, params, inputs, np.ones_like(inputs), config=config, start_id=0, eos_id=1)
        unrolled = search(model, core.unstack_layers(params), inputs, np.ones_like(inputs), config=config,
                          start_id=0, eos_id=1)
        np.testing.assert_array_equal(ours[0], unrolled[0])
        np.testing.assert_allclose(ours[1], unrolled[1], atol=1e-4)


def t5_config(**overrides):
    """configs/t5_tiny.py shrunk to train in seconds on the shipped corpus."""
    from configs import t5_tiny

    config = t5_tiny.get_config()
    values = {"model.num_layers": 1, "model.num_decoder_layers": 1, "model.embed_dim": 64, "model.mlp_dim": 128,
              "tokenizer.vocab_size": 512, "tokenizer.special_symbols": ",".join(f"<extra_id_{i}>" for i in range(16)),
              "seq2seq.input_len": 64, "data.seq_len": 64, "train.batch_size": 8, "train.steps": 40,
              "train.log_every_steps": 10, "eval.every_steps": 10, "eval.max_batches": 2, "eval.batch_size": 8,
              "checkpoint.every_steps": 40, "checkpoint.async_save": False, "optimizer.warmup_steps": 5,
              "optimizer.learning_rate": 3e-3}
    return config_lib.from_config_dict(config, {**values, **overrides})


def _eval_losses(workdir):
    import json
    import os

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["eval/loss"] for r in map(json.loads, f) if "eval/loss" in r]


@pytest.fixture(scope="module")
def pretrained_t5(tmp_path_factory):
    from lm import trainer

    workdir = str(tmp_path_factory.mktemp("t5_pretrained"))
    trainer.train(t5_config(), workdir)
    return workdir


def test_span_corruption_pretraining_lowers_validation_loss(pretrained_t5):
    losses = _eval_losses(pretrained_t5)
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3, losses


@pytest.mark.slow
def test_finetune_from_pretrained_and_evaluate(pretrained_t5, tmp_path):
    """init_from restores the pretrained params and tokenizer; evaluate decodes and scores."""
    import json

    from lm import pretrained, trainer
    from tests.conftest import CORPUS

    lines = [line for line in CORPUS.read_text().split("\n") if len(line.split()) > 3][:400]
    for name, chunk in (("train", lines[:360]), ("dev", lines[360:])):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for line in chunk:  # a toy text-to-text task on real text: the line's first half -> its second half
                words = line.split()
                f.write(json.dumps({"a": " ".join(words[:len(words) // 2]), "b": " ".join(words[len(words) // 2:])}) + "\n")
    workdir = str(tmp_path / "finetuned")
    config = t5_config(**{"train.objective": "seq2seq", "data.train_files": str(tmp_path / "train.jsonl"),
                          "data.validation_files": str(tmp_path / "dev.jsonl"), "seq2seq.input_key": "a",
                          "seq2seq.target_key": "b", "seq2seq.target_len": 32, "train.steps": 20})
    config = dataclasses.replace(config, init_from=pretrained_t5)
    trainer.train(config, workdir)
    source, tuned = pretrained.load(pretrained_t5), pretrained.load(workdir, "latest")
    assert tuned.tokenizer.model_proto == source.tokenizer.model_proto
    first_loss = _eval_losses(workdir)[0]
    scratch = str(tmp_path / "scratch")
    trainer.train(dataclasses.replace(config, init_from="", tokenizer=dataclasses.replace(
        config.tokenizer, path=f"{pretrained_t5}/tokenizer.model")), scratch)
    assert first_loss < _eval_losses(scratch)[0]  # pretrained params, not a fresh init
    result = evaluation.evaluate_workdir(workdir, "validation", beam_size=2, max_examples=8, log=lambda m: None)
    assert {"bleu", "rouge1", "rouge2", "rougeL", "bleu_signature"} <= set(result.metrics)
    assert len(result.predictions) == 8


def test_config_errors_name_the_fix():
    with pytest.raises(config_lib.ConfigError, match="does not fit model.family"):
        config_lib.from_config_dict({"model": {"family": "t5", "positions": "relative"}})
    with pytest.raises(config_lib.ConfigError, match="no learned position table"):
        config_lib.from_config_dict({"model": {"family": "t5"}, "train": {"objective": "seq2seq"}})
    with pytest.raises(config_lib.ConfigError, match="needs model.family='t5'"):
        config_lib.from_config_dict({"model": {"positions": "relative"}})
    tokens = np.arange(10, 40, dtype=np.int32)
    with pytest.raises(config_lib.ConfigError, match="tokenizer.special_symbols"):
        spans.corrupt(tokens, spans.noise_mask(spans.span_lengths(30, 0.3, 2.0), np.random.default_rng(0)),
                      np.array([900], np.int32), eos_id=3)


def test_prefix_lm_rows_split_a_window_at_a_random_point():
    splitter = spans.PrefixSplitter(raw=12, eos_id=3, pad_id=0)
    tokens = np.arange(10, 22, dtype=np.int32)
    cuts = set()
    for seed in range(20):
        inputs, targets = splitter.pair(tokens, np.random.default_rng(seed))
        np.testing.assert_array_equal(np.concatenate([inputs[:-1], targets[:-1]]), tokens)
        assert inputs[-1] == targets[-1] == 3 and len(inputs) > 1 and len(targets) > 1
        cuts.add(len(inputs))
    assert len(cuts) > 4
    row = splitter(tokens, np.random.default_rng(0))
    assert row["encoder_inputs"].shape == row["decoder_targets"].shape == (13,)
    assert row["decoder_weights"].sum() == len(splitter.pair(tokens, np.random.default_rng(0))[1])


def test_shrink_and_perturb_scales_matrices_and_keeps_vectors():
    from lm import init_from

    pretrained_params = {"kernel": np.full((2, 3), 4.0), "scale": np.full((3,), 4.0)}
    fresh = {"kernel": np.full((2, 3), 1.0), "scale": np.full((3,), 1.0)}
    mixed = init_from.shrink_and_perturb(pretrained_params, fresh, 0.25, 2.0)
    np.testing.assert_allclose(mixed["kernel"], 0.25 * 4.0 + 2.0 * 1.0)
    np.testing.assert_allclose(mixed["scale"], 4.0)  # norm scales and biases stay as trained
    assert init_from.shrink_and_perturb(pretrained_params, fresh, 1.0, 0.0) is pretrained_params
    with pytest.raises(config_lib.ConfigError, match="finetune.init_shrink must be in"):
        config_lib.from_config_dict({"finetune": {"init_shrink": 0.0}})


def test_init_from_with_shrink_starts_from_shrunk_params(pretrained_t5, tmp_path):
    """The trainer applies finetune.init_shrink: with a learning rate of ~0 the fine-tuned
    matrices stay at half the pretrained ones, and the norm scales stay as trained."""
    from lm import pretrained, trainer

    config = t5_config(**{"train.steps": 1, "optimizer.learning_rate": 1e-12, "optimizer.warmup_steps": 0,
                          "checkpoint.every_steps": 1, "eval.every_steps": 1, "eval.max_batches": 1})
    config = dataclasses.replace(config, init_from=pretrained_t5,
                                 finetune=dataclasses.replace(config.finetune, init_shrink=0.5))
    workdir = str(tmp_path / "shrunk")
    trainer.train(config, workdir)
    source, tuned = pretrained.load(pretrained_t5).params, pretrained.load(workdir, "latest").params
    np.testing.assert_allclose(tuned["token_embed"]["embedding"], 0.5 * source["token_embed"]["embedding"], atol=1e-6)
    np.testing.assert_allclose(tuned["decoder_norm"]["scale"], source["decoder_norm"]["scale"], atol=1e-6)


def test_init_from_refuses_a_different_output_scaling(pretrained_t5, tmp_path):
    """scale_decoder_outputs changes no shape but every logit: a mismatch with the pretrained run is an error."""
    from lm import trainer

    config = t5_config(**{"train.steps": 1, "model.scale_decoder_outputs": True})
    with pytest.raises(config_lib.ConfigError, match="scale_decoder_outputs=False, this run has True"):
        trainer.train(dataclasses.replace(config, init_from=pretrained_t5), str(tmp_path / "mismatch"))
