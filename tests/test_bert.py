"""BERT: the encoder, MLM+NSP data (masking statistics, pair construction), a short real
pretraining run, partial restore into a classifier, fine-tuning and its metrics."""

import dataclasses
import json
import math
import os
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import config as config_lib
from lm import assembly, init_from, models, optimizer, trainer
from lm.data import glue, pairs
from lm.tasks import classification, mlm_nsp

from conftest import CORPUS, REPO

pytestmark = pytest.mark.bert
SST2_SAMPLE = REPO / "data" / "sst2_sample"
SPECIALS = "[CLS],[SEP],[MASK]"


def bert_config(**overrides):
    """A tiny BERT pretraining config on tiny-shakespeare paragraphs (documents = speeches)."""
    from configs import bert_tiny

    config = bert_tiny.get_config()
    values = {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 4, "model.mlp_dim": 128,
        "model.max_len": 64, "model.dropout_rate": 0.0, "data.seq_len": 64, "data.train_files": str(CORPUS),
        "data.validation_files": "", "data.validation_fraction": 0.1, "mlm.document_boundary": "paragraph",
        "mlm.max_predictions": 10, "tokenizer.vocab_size": 512, "train.batch_size": 16, "train.steps": 30,
        "train.log_every_steps": 5, "eval.every_steps": 30, "eval.batch_size": 16, "eval.max_batches": 2,
        "checkpoint.every_steps": 30, "checkpoint.async_save": False, "optimizer.warmup_steps": 5,
        "optimizer.learning_rate": 3e-3,
    }
    values.update(overrides)
    for dotted, value in values.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config_lib.from_config_dict(config)


def finetune_config(init_from="", **overrides):
    from configs import finetune_sst2

    config = finetune_sst2.get_config()
    values = {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 4, "model.mlp_dim": 128,
        "model.max_len": 64, "data.seq_len": 32, "finetune.data_dir": str(SST2_SAMPLE), "train.batch_size": 16,
        "train.steps": 20, "train.log_every_steps": 5, "eval.every_steps": 10, "eval.batch_size": 40,
        "checkpoint.every_steps": 10, "checkpoint.async_save": False, "optimizer.warmup_steps": 2,
        "tokenizer.vocab_size": 512,
    }
    values.update(overrides)
    for dotted, value in values.items():
        section, field = dotted.split(".")
        config[section][field] = value
    config.init_from = init_from
    return config_lib.from_config_dict(config)


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("bert_pretrain"))
    trainer.train(bert_config(), workdir)
    return workdir


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


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


def test_pretraining_run_learns_and_reports_mlm_and_nsp(pretrained_workdir):
    records = _metrics(pretrained_workdir)
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses[-1] < losses[0] - 0.5, losses
    final = [r for r in records if "eval/mlm_accuracy" in r][-1]
    assert {"eval/mlm_accuracy", "eval/nsp_accuracy", "eval/mlm_loss", "eval/nsp_loss"} <= set(final)
    assert final["eval/mlm_accuracy"] > 0.03  # over 15x the 1/512 chance after 30 steps


def test_partial_restore_takes_the_encoder_and_keeps_a_fresh_head(pretrained_workdir, tmp_path):
    config = finetune_config(init_from=pretrained_workdir)
    run = assembly.build(config)
    fresh = run.init_fn()
    state = init_from.restore(fresh, config, "encoder", log=lambda message: None)
    found = init_from.source(pretrained_workdir)
    pretrained = init_from.read_params(found, log=lambda message: None)
    assert found.step == 30
    same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), state.params["encoder"],
                        pretrained["encoder"])
    assert all(jax.tree.leaves(same))
    assert np.array_equal(state.params["classifier_kernel"], fresh.params["classifier_kernel"])
    assert not np.array_equal(fresh.params["encoder"]["pooler_kernel"], pretrained["encoder"]["pooler_kernel"])

    # Shrink and perturb reach the encoder too: matrices scaled, vectors as trained, head fresh.
    shrunk_config = finetune_config(init_from=pretrained_workdir, **{"finetune.init_shrink": 0.5})
    shrunk = init_from.restore(fresh, shrunk_config, "encoder", log=lambda message: None)
    np.testing.assert_allclose(shrunk.params["encoder"]["pooler_kernel"], 0.5 * pretrained["encoder"]["pooler_kernel"],
                               rtol=1e-6)
    np.testing.assert_array_equal(shrunk.params["encoder"]["pooler_bias"], pretrained["encoder"]["pooler_bias"])
    assert np.array_equal(shrunk.params["classifier_kernel"], fresh.params["classifier_kernel"])

    wider = dataclasses.replace(run.model_config, embed_dim=32, mlp_dim=64)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(models.build(wider).init(jax.random.PRNGKey(0), *run.task.objective.init_inputs())))
    with pytest.raises(config_lib.ConfigError, match=r"has shape \(64,\) in the checkpoint but \(32,\)"):
        init_from.replace_params(shapes["params"]["encoder"], pretrained["encoder"], "encoder")


def test_fine_tune_from_pretrained_writes_report(pretrained_workdir, tmp_path):
    workdir = str(tmp_path / "sst2")
    final = trainer.train(finetune_config(init_from=pretrained_workdir), workdir)
    assert {"eval/accuracy", "eval/f1", "eval/precision", "eval/recall"} <= set(final)
    with open(os.path.join(workdir, "eval_report.json")) as f:
        report = json.load(f)
    evals = {r["step"]: r["eval/accuracy"] for r in _metrics(workdir) if "eval/accuracy" in r}
    assert report["best"]["eval/accuracy"] == pytest.approx(max(evals.values()))
    assert evals[report["best_step"]] == max(evals.values()) and report["validation_examples"] == 120
    with open(os.path.join(workdir, "tokenizer.model"), "rb") as ours, \
            open(os.path.join(pretrained_workdir, "tokenizer.model"), "rb") as theirs:
        assert ours.read() == theirs.read(), "fine-tuning reuses the pretraining tokenizer"


@pytest.mark.parametrize("labels", [2, 3])
def test_metrics_match_scikit_learn(labels):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(labels)
    truth, guess = rng.integers(0, labels, 500), rng.integers(0, labels, 500)
    confusion = np.zeros((labels, labels))
    np.add.at(confusion, (truth, guess), 1)
    ours = classification.metrics_from_confusion(confusion)
    average = "binary" if labels == 2 else "macro"
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(truth, guess))
    assert ours["precision"] == pytest.approx(metrics.precision_score(truth, guess, average=average))
    assert ours["recall"] == pytest.approx(metrics.recall_score(truth, guess, average=average))
    assert ours["f1"] == pytest.approx(metrics.f1_score(truth, guess, average=average))


def test_frozen_encoder_and_layer_wise_decay_scale_updates():
    task = classification.Classification(finetune_config(**{"finetune.freeze_encoder": True}))
    model = models.build(dataclasses.replace(task.config.model, vocab_size=100))
    shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), *task.init_inputs())["params"]))
    params = ones = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), shapes)
    tx = optimizer.build(dataclasses.replace(task.config.optimizer, name="sgd", momentum=0.0, warmup_steps=0,
                                             schedule="constant", learning_rate=1.0), 10, task.update_scale)
    updates, _ = tx.update(ones, tx.init(params), params)
    assert float(jnp.abs(updates["encoder"]["layers"]["layer_1"]["mlp"]["wi"]).max()) == 0.0
    assert float(jnp.abs(updates["encoder"]["token_embed"]["embedding"]).max()) == 0.0
    assert float(jnp.abs(updates["classifier_kernel"]).min()) > 0.0
    assert float(jnp.abs(updates["encoder"]["pooler_kernel"]).min()) > 0.0

    decay = classification.Classification(finetune_config(**{"finetune.layer_lr_decay": 0.5}))
    factor = lambda *names: decay.update_scale([jax.tree_util.DictKey(n) for n in names])  # noqa: E731
    assert factor("classifier_kernel") == 1.0
    assert factor("encoder", "layers", "layer_1", "mlp", "wi") == 0.5  # top of 2 layers
    assert factor("encoder", "layers", "layer_0", "mlp", "wi") == 0.25
    assert factor("encoder", "token_embed", "embedding") == 0.125


def test_glue_by_name_from_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        split = glue.load(config_lib.FinetuneConfig(task="mrpc", tfds_name="glue/mrpc"), "validation")
    assert len(split.first) == len(split.second) == len(split.labels) == 12
    assert set(np.unique(split.labels)) <= {0, 1}


def test_bad_configs_are_refused_before_compiling():
    with pytest.raises(config_lib.ConfigError, match="model.family=bert"):
        bert_config(**{"model.family": "gpt"})
    with pytest.raises(config_lib.ConfigError, match="model.num_classes=2"):
        classification.Classification(finetune_config(**{"model.num_classes": 3}))
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        init_from.source("/nonexistent/workdir")


def test_mean_pooling_ignores_padding():
    cfg = config_lib.ModelConfig(family="bert", vocab_size=50, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                                 max_len=12, num_classes=2, pooling="mean")
    model = models.build(cfg)
    tokens = jnp.asarray([[2, 7, 9, 11, 3, 0, 0, 0]], jnp.int32)
    real = (tokens > 0).astype(jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens * 0, real)
    apply = jax.jit(model.apply)
    padded = apply(params, tokens, tokens * 0, real)
    trimmed = apply(params, tokens[:, :5], tokens[:, :5] * 0, real[:, :5])
    np.testing.assert_allclose(padded, trimmed, atol=1e-5)
    other_padding = apply(params, tokens.at[0, 6].set(30), tokens * 0, real)
    np.testing.assert_allclose(padded, other_padding, atol=1e-6)


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


def test_fine_tuning_refuses_a_pretraining_run_of_the_other_casing(pretrained_workdir, tmp_path):
    # bert_tiny (and so the fixture's run) is uncased; the refusal comes before any data is read.
    config = finetune_config(init_from=pretrained_workdir, **{"data.lowercase": False})
    with pytest.raises(config_lib.ConfigError, match="data.lowercase=True, this run has False"):
        init_from.check(config)
    with pytest.raises(config_lib.ConfigError, match="model.family=bert run, this run is gpt"):
        init_from.check(dataclasses.replace(config, model=dataclasses.replace(config.model, family="gpt")))
    with pytest.raises(config_lib.ConfigError, match="data.lowercase=True"):
        trainer.train(config, str(tmp_path / "cased"))
    assert not os.path.exists(tmp_path / "cased" / "tokenizer.model"), "refused before preparing any data"


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


def test_fine_tuning_resumes_after_its_pretraining_workdir_is_gone(pretrained_workdir, tmp_path):
    """A workdir is self-contained: on resume it reads its own tokenizer copy and checkpoints."""
    source = tmp_path / "pretrained_copy"
    shutil.copytree(pretrained_workdir, source)
    workdir = str(tmp_path / "sst2")
    trainer.train(finetune_config(init_from=str(source), **{"train.steps": 10}), workdir)
    shutil.rmtree(source)
    final = trainer.train(finetune_config(init_from=str(source), **{"train.steps": 20}), workdir)
    assert "eval/accuracy" in final
    assert max(r["step"] for r in _metrics(workdir)) == 20


def test_from_scratch_tokenizers_are_cached_by_their_text(tmp_path):
    """The tokenizer cache key is the training text itself: an uncased run never reuses a cased
    run's tokenizer, and the same text finds the same tokenizer."""
    for name in ("stsa.binary.train", "stsa.binary.dev"):  # the shipped sample is lowercase: give it capitals
        lines = (SST2_SAMPLE / name).read_text().splitlines()
        (tmp_path / name).write_text("".join(f"{line[:2]}{line[2:].capitalize()}\n" for line in lines))

    def tokenizer(lowercase):
        config = finetune_config(**{"data.lowercase": lowercase, "finetune.data_dir": str(tmp_path),
                                    "data.cache_dir": str(tmp_path / "cache")})
        return classification.ClassificationPipeline(config).prepare().tokenizer

    cased, uncased = tokenizer(False), tokenizer(True)
    assert cased.fingerprint != uncased.fingerprint
    assert tokenizer(True).fingerprint == uncased.fingerprint
    assert len(os.listdir(tmp_path / "cache" / "tokenizers")) == 2
