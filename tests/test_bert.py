"""BERT pretraining: the encoder, MLM+NSP data (masking statistics, pair construction, batches,
tokenizers) and a short real pretraining run. Fine-tuning is tests/test_bert_finetune.py."""

import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import models
from lm.data import glue, pairs
from lm.tasks import mlm_nsp

from bert_setup import SPECIALS, bert_config, metrics_of

pytestmark = pytest.mark.bert


def test_bert_base_has_110m_parameters_and_tiny_runs():
    from configs import bert_base

    config = config_lib.from_config_dict(bert_base.get_config())
    model = models.build(dataclasses.replace(config.model, vocab_size=30522))
    inputs = mlm_nsp.MlmNsp(config).init_inputs()
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))["params"]
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    assert count == 110_106_428  # BERT-base: 109.5M + our pre-norm's final norm and the tied head's transform
    assert 109e6 < count < 111e6


def test_masking_statistics():
    tokenizer_config = config_lib.TokenizerConfig(vocab_size=512, special_symbols=SPECIALS)
    config = bert_config()
    task = mlm_nsp.MlmNspPipeline(dataclasses.replace(config, tokenizer=tokenizer_config))
    data = task.prepare()
    examples = pairs.PretrainingExamples(data.train, 64, data.ids, dataclasses.replace(config.mlm, max_predictions=64))
    rng = np.random.default_rng(0)
    anchors = data.train.anchors()
    selected = candidates = masked = randomized = kept = 0
    for k in range(600):
        anchor = anchors[k * 7 % len(anchors)]
        a, b, _ = pairs.make_pair(data.train, anchor, 64, 0.0, rng)
        tokens, type_ids, segment_ids = pairs.encode_pair(a, b, 64, data.ids)
        inputs, positions, targets, weights = pairs.mask_tokens(tokens, segment_ids, data.ids, examples.config, rng)
        chosen = positions[weights > 0]
        special = (tokens == data.ids.cls) | (tokens == data.ids.sep) | (segment_ids == 0)
        assert not special[chosen].any(), "specials and padding are never selected"
        assert (inputs[~np.isin(np.arange(64), chosen)] == tokens[~np.isin(np.arange(64), chosen)]).all()
        assert (targets[weights > 0] == tokens[chosen]).all()
        candidates += int((~special).sum())
        selected += len(chosen)
        masked += int((inputs[chosen] == data.ids.mask).sum())
        kept += int((inputs[chosen] == tokens[chosen]).sum())
        randomized += int(((inputs[chosen] != tokens[chosen]) & (inputs[chosen] != data.ids.mask)).sum())
    assert selected / candidates == pytest.approx(0.15, abs=0.005)
    assert masked / selected == pytest.approx(0.8, abs=0.02)
    # a random replacement can draw the original piece, so "kept" is 10% plus a sliver
    assert randomized / selected == pytest.approx(0.1, abs=0.015)
    assert kept / selected == pytest.approx(0.1, abs=0.015)


def test_nsp_pairs_are_half_true_next_and_negatives_from_other_documents():
    # Document d's sentences hold ids 1000 * (d + 1) + k: where a segment came from is readable.
    docs = pairs.Documents([[np.full(5 + k % 4, 1000 * (d + 1) + k, np.int32) for k in range(30)] for d in range(12)])
    rng = np.random.default_rng(0)
    labels = []
    for anchor in docs.anchors()[rng.permutation(len(docs.anchors()))[:2000]]:
        a, b, is_next = pairs.make_pair(docs, anchor, 64, 0.1, rng)
        assert 1 <= len(a) and 1 <= len(b) and len(a) + len(b) <= 61
        doc_a, doc_b = a // 1000 - 1, b // 1000 - 1
        assert (doc_a == anchor[0]).all()
        if is_next:
            assert (doc_b == anchor[0]).all() and b[0] % 1000 == a[-1] % 1000 + 1, "B continues A"
        else:
            assert (doc_b != anchor[0]).all(), "a negative B comes from another document"
        labels.append(is_next)
    assert np.mean(labels) == pytest.approx(0.5, abs=0.03)


def test_pretraining_run_learns_and_reports_mlm_and_nsp(bert_pretrained_workdir):
    records = metrics_of(bert_pretrained_workdir)
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses[-1] < losses[0] - 0.5, losses
    final = [r for r in records if "eval/mlm_accuracy" in r][-1]
    assert {"eval/mlm_accuracy", "eval/nsp_accuracy", "eval/mlm_loss", "eval/nsp_loss"} <= set(final)
    assert final["eval/mlm_accuracy"] > 0.03  # over 15x the 1/512 chance after 30 steps


def test_pretraining_batches_are_deterministic_and_resume_exactly():
    config = bert_config(**{"train.batch_size": 4})
    task = mlm_nsp.MlmNspPipeline(config)
    data = task.prepare()
    first = task.train_iterator(data)
    next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(2)]
    resumed = task.train_iterator(data)
    resumed.set_state(state)
    again = [next(resumed) for _ in range(2)]
    for a, b in zip(expected, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_process = next(task.train_iterator(data, process_index=1, process_count=2))
    assert other_process["inputs"].shape == (2, 64)
    assert not np.array_equal(other_process["inputs"], next(task.train_iterator(data, 0, 2))["inputs"])


def test_sentences_encode_as_in_running_text_and_pairs_keep_their_spaces():
    # The tokenizers add no dummy prefix: encoded bare, "The" opening a sentence would be other
    # pieces than " The" inside one, and A's last sentence would run into B's first ("end.The").
    data = mlm_nsp.MlmNspPipeline(bert_config()).prepare()
    tokenizer = data.tokenizer
    first, running = pairs.encode_sentences(tokenizer, ["The king", "and The king"])
    assert first == running[-len(first):], "a sentence's words are the pieces they are in running text"
    docs = pairs.split_documents("First one. Second one.\n\nOther text here. And more.", "paragraph")
    tokenized = pairs.Documents.tokenize(docs, tokenizer)
    joined = tokenizer.decode(np.concatenate(tokenized.sentences[0]))
    assert joined == " First one. Second one.", joined
    split = glue.LabelledSplit(["The king"], None, np.asarray([1], np.int32))
    encoded = glue.encode(split, tokenizer, 16)
    assert list(encoded.inputs[0][1:1 + len(first)]) == first, "fine-tuning encodes as pretraining does"


def test_lowercase_makes_an_uncased_tokenizer_and_inputs(tmp_path):
    cased = mlm_nsp.MlmNspPipeline(bert_config(**{"data.lowercase": False})).prepare()
    uncased = mlm_nsp.MlmNspPipeline(bert_config(**{"data.lowercase": True})).prepare()
    assert cased.tokenizer.fingerprint != uncased.tokenizer.fingerprint, "the tokenizer cache tells them apart"
    def cased_pieces(tokenizer):  # control, byte-fallback and BERT's special pieces aside
        pieces = (tokenizer._sp.id_to_piece(i) for i in range(tokenizer.vocab_size))
        return [p for p in pieces if p != p.lower() and not re.fullmatch(r"<.*>|\[.*\]", p)]
    assert cased_pieces(cased.tokenizer) and not cased_pieces(uncased.tokenizer), "an uncased vocabulary"
    text = uncased.tokenizer.decode(np.concatenate(uncased.train.sentences[0]))
    assert text == text.lower() and any(c.isalpha() for c in text)
    with pytest.raises(config_lib.ConfigError, match="data.lowercase"):
        bert_config(**{"data.lowercase": True, "train.objective": "causal_lm", "model.family": "gpt"})


def test_training_batches_carry_each_pairs_own_next_sentence_label():
    # Through the whole train pipeline (shuffle, random_map, batching): document d's sentences
    # hold ids 1000 * (d + 1) + k, so every example shows which documents A and B came from.
    docs = pairs.Documents([[np.full(4 + k % 3, 1000 * (d + 1) + k, np.int32) for k in range(20)] for d in range(6)])
    ids = pairs.SpecialIds(cls=1, sep=2, mask=3, pad=0, ordinary=np.arange(10, 20, dtype=np.int32))
    data = mlm_nsp.PretrainingData(None, docs, docs, ids)
    task = mlm_nsp.MlmNspPipeline(bert_config(**{"train.batch_size": 16}))
    iterator = task.train_iterator(data)
    labels = []
    for _ in range(4):
        batch = next(iterator)
        for row in range(16):
            tokens, type_ids = batch["inputs"][row], batch["type_ids"][row]
            doc_a = set(tokens[(type_ids == 0) & (tokens >= 1000)] // 1000)
            doc_b = set(tokens[(type_ids == 1) & (tokens >= 1000)] // 1000)
            assert len(doc_a) == 1 and len(doc_b) == 1, "A and B each come from one document"
            assert (doc_a == doc_b) == bool(batch["nsp_labels"][row]), "the label describes this row's pair"
            labels.append(batch["nsp_labels"][row])
    assert 0.3 < np.mean(labels) < 0.7


def test_next_sentence_logits_see_segment_b_and_its_type_ids():
    cfg = config_lib.ModelConfig(family="bert", vocab_size=50, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                                 max_len=12)
    model = models.build(cfg)
    tokens = jnp.asarray([[4, 7, 9, 5, 11, 12, 5, 0]], jnp.int32)  # [CLS] a a [SEP] b b [SEP] pad
    type_ids = jnp.asarray([[0, 0, 0, 0, 1, 1, 1, 0]], jnp.int32)
    real = (tokens > 0).astype(jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, type_ids, real)
    apply = jax.jit(model.apply)
    nsp = lambda t, ty: apply(params, t, ty, real)[1]  # noqa: E731
    base = nsp(tokens, type_ids)
    assert float(jnp.abs(nsp(tokens.at[0, 5].set(30), type_ids) - base).max()) > 1e-6, "[CLS] reads B's tokens"
    assert float(jnp.abs(nsp(tokens, type_ids * 0) - base).max()) > 1e-6, "and the A/B type ids"


@pytest.mark.parametrize("seq_len", [64, 128])
def test_pair_segments_are_runs_of_consecutive_sentences_that_fill_the_length(seq_len):
    # Sentence k of document d holds id 1000 * (d + 1) + k (5-8 tokens): a segment's ids show
    # which sentences it is made of, in which order.
    docs = pairs.Documents([[np.full(5 + k % 4, 1000 * (d + 1) + k, np.int32) for k in range(60)] for d in range(8)])
    rng = np.random.default_rng(1)
    lengths = []
    for anchor in docs.anchors()[rng.permutation(len(docs.anchors()))[:1000]]:
        a, b, is_next = pairs.make_pair(docs, anchor, seq_len, 0.0, rng)
        assert len(a) + len(b) <= seq_len - 3 and len(a) >= 1 and len(b) >= 1
        for segment in (a, b):
            steps = np.diff(segment % 1000)
            assert ((steps == 0) | (steps == 1)).all(), "a segment is consecutive sentences, in order"
            assert len(set(segment // 1000)) == 1, "from one document"
        assert a[0] % 1000 >= anchor[1], "A starts at the anchor sentence (or inside it, when trimmed)"
        if is_next:
            assert b[0] % 1000 == a[-1] % 1000 + 1, "a true B is the sentence right after A"
        if anchor[1] < 60 - seq_len // 5:  # far enough from the document's end to fill the pair
            lengths.append(len(a) + len(b))
    # without short pairs, a pair takes whole sentences until the budget is met (then trims)
    assert np.mean(lengths) > 0.9 * (seq_len - 3)


def test_overlap_head_scores_a_restated_segment_above_an_unrelated_one():
    cfg = config_lib.ModelConfig(family="bert", vocab_size=64, num_layers=1, embed_dim=32, num_heads=2, mlp_dim=32,
                                 max_len=16, nsp_head="pooled_and_overlap")
    model = models.build(cfg)
    # [CLS] a a a [SEP] b b b [SEP] pad: B restates A's words, or uses words A never has
    restated = jnp.asarray([[1, 10, 11, 12, 2, 12, 10, 11, 2, 0]], jnp.int32)
    unrelated = jnp.asarray([[1, 10, 11, 12, 2, 40, 41, 42, 2, 0]], jnp.int32)
    types = jnp.asarray([[0, 0, 0, 0, 0, 1, 1, 1, 1, 0]], jnp.int32)
    real = (restated > 0).astype(jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), restated, types, real))["params"]
    assert set(params["nsp_overlap"]) == {"weight_kernel", "weight_bias", "log_scale", "bias"}
    assert "nsp_overlap" not in params["encoder"], "a fine-tuning run takes the encoder only"
    # zero the pooled path's head: what is left is the overlap score (class 1 minus class 0)
    params = {**params, "nsp_kernel": params["nsp_kernel"] * 0}
    apply = jax.jit(model.apply)
    score = lambda t: float(jnp.diff(apply({"params": params}, t, types, real)[1])[0, 0])  # noqa: E731
    assert score(restated) > score(unrelated) + 3.0, (score(restated), score(unrelated))
    plain = models.build(dataclasses.replace(cfg, nsp_head="pooled"))
    assert "nsp_overlap" not in jax.eval_shape(plain.init, jax.random.PRNGKey(0), restated, types, real)["params"], \
        "BERT's own head is the default"


def test_pretraining_examples_do_not_depend_on_the_process_count():
    """Each example's randomness (masks, NSP coin, partner) is drawn by its global index, before
    the per-process slice: two processes together read exactly what one process reads."""
    task = mlm_nsp.MlmNspPipeline(bert_config())
    data = task.prepare()

    def rows(batch):
        return sorted(tuple(np.asarray(batch[k][i]).tobytes() for k in sorted(batch)) for i in range(len(batch["inputs"])))

    whole = next(task.train_iterator(data, 0, 1))
    halves = [next(task.train_iterator(data, index, 2)) for index in range(2)]
    assert rows(whole) == sorted(rows(halves[0]) + rows(halves[1]))
    assert 0 < np.mean(whole["nsp_labels"]) < 1
