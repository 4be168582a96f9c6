"""T5's encoder as a classifier and a tagger (lm/models/t5.py with model.num_classes): it learns a
real-text task past the majority class, has the encoder's parameters only, and init_from takes
a span-corruption run's encoder and embeddings, leaving its decoder behind. Tagging with T5 is
parametrised into tests/test_finetune_tasks.py's token-classification test (the same alignment
code as GPT and BERT)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import CORPUS
from tests.test_t5 import t5_config

pytestmark = pytest.mark.finetune
ENCODER_PARAMS = {"token_embed", "encoder", "encoder_norm", "encoder_position_bias"}


def _questions_or_not(tmp_path):
    """Real lines of the shipped corpus labelled by whether they are questions (end in "?"), one
    question to two other lines: the majority class is 2/3."""
    lines = [line for line in CORPUS.read_text().split("\n") if len(line.split()) > 3]
    questions = [line for line in lines if line.endswith("?")]
    others = [line for line in lines if not line.endswith("?")]
    splits = {"train": (questions[:240], others[:480]), "dev": (questions[240:300], others[480:600])}
    for name, (asked, told) in splits.items():
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for text, label in sorted([(t, "question") for t in asked] + [(t, "other") for t in told]):
                f.write(json.dumps({"text": text, "label": label}) + "\n")
    return {"finetune.train_files": str(tmp_path / "train.jsonl"),
            "finetune.validation_files": str(tmp_path / "dev.jsonl")}


def _classifier_config(tmp_path, **overrides):
    values = {"train.objective": "classification", "model.num_classes": 2, "model.pooling": "mean",
              "data.seq_len": 32, "train.batch_size": 16, "eval.batch_size": 60, "eval.max_batches": 0,
              "train.steps": 60, "eval.every_steps": 30, "checkpoint.every_steps": 30, **_questions_or_not(tmp_path)}
    values.update(overrides)
    return t5_config(**values)


def test_t5_encoder_classifier_beats_the_majority_class_on_real_text(tmp_path):
    from lm import trainer  # noqa: PLC0415

    config = _classifier_config(tmp_path, **{"tokenizer.special_symbols": ""})
    metrics = trainer.train(config, str(tmp_path / "run"))
    assert metrics["eval/accuracy"] > 0.85, metrics  # the majority class ("other") is 0.667
    report = json.loads((tmp_path / "run" / "eval_report.json").read_text())
    assert report["label_names"] == ["other", "question"]


def test_t5_classifier_is_the_encoder_alone_with_pooled_or_per_token_logits():
    from lm import models  # noqa: PLC0415

    cfg = dataclasses.replace(t5_config().model, vocab_size=97, num_classes=3, pooling="mean")
    tokens = jnp.arange(2 * 7, dtype=jnp.int32).reshape(2, 7) % 97
    segments = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    for classify, shape in (("sequence", (2, 3)), ("token", (2, 7, 3))):
        model = models.build(dataclasses.replace(cfg, classify=classify))
        params = model.init(jax.random.PRNGKey(0), tokens, None, segments)["params"]
        assert set(params) == ENCODER_PARAMS | {"head"}  # no decoder, no output projection
        logits = model.apply({"params": params}, tokens, None, segments)
        assert logits.shape == shape and logits.dtype == jnp.float32
    # Mean pooling reads real tokens only: padding's ids do not change a row's logits.
    model = models.build(cfg)
    params = model.init(jax.random.PRNGKey(0), tokens, None, segments)["params"]
    changed = tokens.at[1, 5].set(3)
    np.testing.assert_allclose(model.apply({"params": params}, tokens, None, segments)[1],
                               model.apply({"params": params}, changed, None, segments)[1], rtol=1e-6)


def test_t5_classifier_drops_out_the_encoder_states_once():
    """The head drops out its input (heads.ClassifierHead), as GPT's and BERT's do; the encoder's
    final dropout would make it twice, so the head must see the states without it."""
    import flax.linen as nn  # noqa: PLC0415

    from lm import models  # noqa: PLC0415
    from lm.models import heads  # noqa: PLC0415

    cfg = dataclasses.replace(t5_config().model, vocab_size=97, num_classes=3, classify="token", dropout_rate=0.5)
    tokens = jnp.arange(4 * 16, dtype=jnp.int32).reshape(4, 16) % 97
    model = models.build(cfg)
    params = model.init(jax.random.PRNGKey(0), tokens, None)["params"]
    seen = []

    def record_head_input(call, args, kwargs, context):
        if isinstance(context.module, heads.ClassifierHead) and context.method_name == "__call__":
            seen.append(args[0])
        return call(*args, **kwargs)

    with nn.intercept_methods(record_head_input):
        model.apply({"params": params}, tokens, None, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    # An element of the one-layer stream is zero where the embedding and both residual branches
    # were dropped (1/8 at rate 0.5); a final dropout on top would make it 1/2 + 1/16.
    zeros = float(jnp.mean(seen[0] == 0.0))
    assert 0.08 < zeros < 0.2, f"{zeros:.0%} of the head's input is zero before the head's own dropout"


@pytest.fixture(scope="module")
def span_corruption_run(tmp_path_factory):
    from lm import trainer  # noqa: PLC0415

    workdir = str(tmp_path_factory.mktemp("t5_span_corruption"))
    trainer.train(t5_config(**{"train.steps": 10, "eval.every_steps": 10, "checkpoint.every_steps": 10}), workdir)
    return workdir


def test_init_from_takes_the_encoder_and_embeddings_of_a_span_corruption_run(span_corruption_run, tmp_path):
    from lm import assembly, init_from  # noqa: PLC0415

    config = dataclasses.replace(_classifier_config(tmp_path), init_from=span_corruption_run)
    run = assembly.build(config)
    assert run.config.tokenizer.path == f"{span_corruption_run}/tokenizer.model"  # the source's tokenizer
    fresh = run.init_fn()
    messages = []
    state = init_from.restore(fresh, config, run.task.objective.init_from_subtree, messages.append,
                              run.task.objective.init_from_new)
    source = init_from.read_params(init_from.source(span_corruption_run), log=lambda message: None)
    assert {"decoder", "decoder_norm", "decoder_position_bias"} <= set(source)
    assert set(state.params) == ENCODER_PARAMS | {"head"}
    for name in ENCODER_PARAMS:
        same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), state.params[name], source[name])
        assert all(jax.tree.leaves(same)), name
    assert not np.array_equal(fresh.params["token_embed"]["embedding"], source["token_embed"]["embedding"])
    head_same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), state.params["head"], fresh.params["head"])
    assert all(jax.tree.leaves(head_same))
    assert any("decoder, decoder_norm, decoder_position_bias left behind" in m for m in messages), messages


def test_planning_sees_a_t5_classifier_as_one_row_of_encoder_tokens(tmp_path):
    from lm import planning  # noqa: PLC0415

    batch = planning.abstract_batch(_classifier_config(tmp_path), None)
    assert set(batch) == {"inputs", "type_ids", "segment_ids", "labels", "weights"}
    assert batch["inputs"].shape == (16, 32)
    assert {"encoder_inputs", "decoder_inputs"} <= set(planning.abstract_batch(t5_config(), None))


def test_t5_classifier_configuration_errors_name_the_fix():
    from lm.config import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="model.pooling='cls' does not fit model.family='t5': use mean"):
        t5_config(**{"train.objective": "classification", "model.num_classes": 2})
    with pytest.raises(ConfigError, match="'extractive_qa' does not fit model.family='t5'.* or token_classification"):
        t5_config(**{"train.objective": "extractive_qa", "model.num_classes": 2, "model.classify": "token"})
    with pytest.raises(ConfigError, match="does not fit model.family='t5'"):
        t5_config(**{"train.objective": "causal_lm"})
