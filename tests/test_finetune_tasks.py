"""The fine-tuning objectives end to end through the trainer, on small data written here:
token classification (GPT, BERT and T5's encoder), classification of the user's files (GPT, test split
reported apart), extractive QA (GPT), SFT (GPT) and init_from of a GPT into a classifier."""

import json
import random
from pathlib import Path

import pytest

from conftest import small_config

pytestmark = pytest.mark.finetune
SQUAD_SAMPLE = str(Path(__file__).parent / "data" / "squad_sample.json")
PEOPLE, PLACES = ["alba brenner", "kofi mensah", "lin wei"], ["oslo", "lima", "accra"]
FILLER = "we saw them near the old market today and then went home again".split()


def _tagged_sentences(count, seed):
    """Sentences with two entity types whose words alone give them away."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words, tags = [], []
        for _ in range(rng.randint(4, 9)):
            roll = rng.random()
            if roll < 0.15:
                name = rng.choice(PEOPLE).split()
                words += name
                tags += ["B-person"] + ["I-person"] * (len(name) - 1)
            elif roll < 0.25:
                words.append(rng.choice(PLACES))
                tags.append("B-location")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        sentences.append(list(zip(words, tags)))
    return sentences


def _write_conll(path, sentences):
    path.write_text("\n".join("\n".join(f"{w}\t{t}" for w, t in s) + "\n" for s in sentences))


def _config(family="gpt", **overrides):
    base = {"train.steps": 60, "eval.every_steps": 30, "checkpoint.every_steps": 30, "eval.max_batches": 0,
            "optimizer.learning_rate": 3e-3, "train.batch_size": 16, "eval.batch_size": 16,
            "tokenizer.vocab_size": 300, "data.seq_len": 32, "model.max_len": 32, "train.log_every_steps": 30}
    if family == "bert":
        base.update({"model.family": "bert", "tokenizer.special_symbols": "[CLS],[SEP],[MASK]",
                     "model.pooling": "cls"})
    base.update(overrides)
    # t5: t5_tiny's encoder (relative positions, no sentinels: a classifier never reads them).
    t5 = {"tokenizer.special_symbols": ""} if family == "t5" else {}
    config = small_config("t5_tiny" if family == "t5" else "gpt_tiny",
                          **{k: v for k, v in {**base, **t5}.items() if k.count(".") == 1})
    return config


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_token_classification_learns_entities_and_reports_the_test_split(family, tmp_path):
    from lm import trainer  # noqa: PLC0415

    for name, count, seed in (("train", 300, 0), ("dev", 60, 1), ("test", 60, 2)):
        _write_conll(tmp_path / f"{name}.conll", _tagged_sentences(count, seed))
    # A vocabulary with a piece per word (~360 here): a causal model labels a word at its first
    # piece, which then names it (with single letters it could not know the word yet).
    config = _config(family, **{"train.objective": "token_classification", "model.num_classes": 5,
                                "tokenizer.vocab_size": 360,
                                "model.classify": "token", "finetune.train_files": str(tmp_path / "train.conll"),
                                "finetune.validation_files": str(tmp_path / "dev.conll"),
                                "finetune.test_files": str(tmp_path / "test.conll")})
    metrics = trainer.train(config, str(tmp_path / "run"))
    assert metrics["eval/f1"] > 0.8, metrics
    report = json.loads((tmp_path / "run" / "eval_report.json").read_text())
    assert report["selected_by"] == "eval/f1" and report["test"]["test/f1"] > 0.8
    assert report["label_names"] == ["O", "B-location", "I-location", "B-person", "I-person"]


def test_gpt_classifies_the_users_jsonl_into_three_classes(tmp_path, monkeypatch):
    """The files are named relative to the config's data directory (data.data_dir), with
    $LM_DATA_DIR unset: the one data folder a user sets holds fine-tuning files too."""
    from lm import trainer  # noqa: PLC0415

    monkeypatch.delenv("LM_DATA_DIR", raising=False)
    (tmp_path / "colours").mkdir()
    rng = random.Random(0)
    words = {"red": ["cherry", "ruby", "blood"], "green": ["grass", "leaf", "lime"], "blue": ["sky", "sea", "ink"]}

    def write(name, count):
        with open(tmp_path / "colours" / name, "w") as f:
            for _ in range(count):
                label = rng.choice(sorted(words))
                text = " ".join(rng.choice(FILLER) for _ in range(3)) + " " + rng.choice(words[label])
                f.write(json.dumps({"sentence": text, "colour": label}) + "\n")
    write("train.jsonl", 400)
    write("dev.jsonl", 60)
    write("test.jsonl", 60)
    config = _config(**{"train.objective": "classification", "model.num_classes": 3, "model.pooling": "last",
                        "finetune.train_files": "colours/train.jsonl",
                        "finetune.validation_files": "colours/dev.jsonl",
                        "finetune.test_files": "colours/test.jsonl", "finetune.text_fields": "sentence",
                        "finetune.label_field": "colour", "data.data_dir": str(tmp_path),
                        "data.train_files": "no_corpus_here.txt"})  # inherited, never read: not needed
    metrics = trainer.train(config, str(tmp_path / "run"))
    assert metrics["eval/accuracy"] > 0.9, metrics
    report = json.loads((tmp_path / "run" / "eval_report.json").read_text())
    assert report["label_names"] == ["blue", "green", "red"] and report["test"]["test/accuracy"] > 0.9


@pytest.mark.slow  # ~20 s on 2 cores: the default suite stays near 15 minutes
def test_extractive_qa_trains_and_its_scores_equal_the_host_side_answers(tmp_path):
    """The eval step's per-window best spans, summed into vectors and turned into answer texts on
    the host, give the EM and F1 that lm/extractive_qa.py's plain numpy path gives from the same
    model's logits."""
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from lm import extractive_qa, pretrained, trainer  # noqa: PLC0415
    from lm.tasks import extractive_qa as qa_task  # noqa: PLC0415

    config = _config(**{"train.objective": "extractive_qa", "model.num_classes": 2, "model.classify": "token",
                        "finetune.train_files": SQUAD_SAMPLE, "finetune.validation_files": SQUAD_SAMPLE,
                        "finetune.select_metric": "f1", "finetune.doc_stride": 48, "tokenizer.vocab_size": 340,
                        "finetune.max_question_tokens": 16, "data.seq_len": 96, "model.max_len": 96,
                        "train.steps": 80, "train.batch_size": 8, "eval.batch_size": 8, "eval.every_steps": 40,
                        "checkpoint.every_steps": 40})
    metrics = trainer.train(config, str(tmp_path / "run"))
    assert {"eval/exact_match", "eval/f1", "eval/loss"} <= set(metrics)
    assert metrics["eval/exact_match"] > 0  # trained and evaluated on the same seven questions

    loaded = pretrained.load(str(tmp_path / "run"), "latest")
    data = qa_task.prepare(config)
    batch = {k: jnp.asarray(v) for k, v in data.validation.rows.arrays.items()}
    logits = np.asarray(loaded.model.apply({"params": loaded.params}, batch["inputs"], None, batch["segment_ids"]))
    per_example = {}
    for i, window in enumerate(data.validation.windows):
        per_example.setdefault(window.example_index, []).append(
            (logits[i, :, 0], logits[i, :, 1], window.context_spans))
    predictions = [extractive_qa.predict(e.context, per_example[i], config.finetune.max_answer_tokens)
                   for i, e in enumerate(data.validation.examples)]
    expected = extractive_qa.scores(predictions, [e.answers for e in data.validation.examples])
    assert metrics["eval/exact_match"] == pytest.approx(expected["exact_match"])
    assert metrics["eval/f1"] == pytest.approx(expected["f1"])


@pytest.mark.slow  # ~20 s on 2 cores: the default suite stays near 15 minutes
def test_sft_learns_responses_and_generate_chat_answers_through_the_template(tmp_path):
    """Prompt -> response pairs whose response is a word of the prompt: the response loss falls
    well below the untrained one, the workdir keeps the template, tools/generate.py --chat
    renders the prompt the way training did, and tools/evaluate.py's scoring of a test split
    with several references answers and scores it."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from conftest import REPO  # noqa: PLC0415
    from lm import evaluation, trainer, workdir  # noqa: PLC0415

    rng = random.Random(0)
    colours = ["red", "green", "blue", "black", "white"]

    def write(name, count):
        with open(tmp_path / name, "w") as f:
            for _ in range(count):
                colour = rng.choice(colours)
                words = [rng.choice(FILLER) for _ in range(4)] + [colour]
                rng.shuffle(words)
                # A test split with two references a line, as DialogSum's: the answer and another colour.
                f.write(json.dumps({"prompt": "which colour is in: " + " ".join(words), "response": colour,
                                    "first": "grey", "second": colour}) + "\n")
    write("train.jsonl", 400)
    write("dev.jsonl", 40)
    write("test.jsonl", 20)
    template = "Q: {prompt}\nA:"
    config = _config(**{"train.objective": "sft", "finetune.train_files": str(tmp_path / "train.jsonl"),
                        "finetune.validation_files": str(tmp_path / "dev.jsonl"), "finetune.text_fields": "prompt",
                        "finetune.test_files": str(tmp_path / "test.jsonl"),
                        "finetune.test_reference_fields": "first,second",
                        "finetune.label_field": "response", "finetune.chat_template": template,
                        "data.seq_len": 64, "model.max_len": 64, "train.steps": 80, "eval.every_steps": 40,
                        "checkpoint.every_steps": 40})
    metrics = trainer.train(config, str(tmp_path / "run"))
    # Five equally likely answers (plus EOS): a model that reads the prompt does far better than ln 5.
    assert metrics["eval/loss"] < 0.5, metrics
    assert workdir.read_config(str(tmp_path / "run")).finetune.chat_template == template
    out = subprocess.run([sys.executable, str(REPO / "tools" / "generate.py"), f"--workdir={tmp_path / 'run'}",
                          "--chat", "--temperature=0", "--max_new_tokens=4", "--nostream",
                          "--prompt=which colour is in: market blue the we near"],
                         check=True, cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip().split()[0] == "blue", out.stdout
    # tools/evaluate.py's path: every test prompt answered greedily and scored against both references.
    result = evaluation.evaluate_workdir(str(tmp_path / "run"), "test", lead_sentences=1, max_new_tokens=8,
                                         log=lambda m: None)
    assert result.metrics["references_per_example"] == 2 and len(result.predictions) == 20
    assert result.metrics["exact_match"] > 80 and result.metrics["rouge1"] > 80, result.predictions
    assert result.metrics["baseline_lead/rouge1"] < 50  # the prompt names the colour among other words


def test_heads_and_objectives_that_do_not_fit_are_refused_by_name():
    from lm.config import ConfigError  # noqa: PLC0415

    cases = [({"train.objective": "token_classification", "model.num_classes": 5}, "model.classify=token"),
             ({"train.objective": "extractive_qa", "model.num_classes": 3, "model.classify": "token"},
              "model.num_classes=2"),
             ({"train.objective": "classification", "model.num_classes": 2, "model.pooling": "cls"},
              "model.pooling='cls' does not fit model.family='gpt'"),
             ({"train.objective": "causal_lm", "model.classify": "token"}, "leave it at 'sequence'"),
             ({"train.objective": "causal_lm", "finetune.layer_lr_decay": 0.8},
              "finetune.freeze_encoder and finetune.layer_lr_decay are read by classification"),
             ({"train.objective": "sft", "model.family": "bert", "tokenizer.special_symbols": "[CLS],[SEP],[MASK]"},
              "model.family=gpt")]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
            _config(**overrides)


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_frozen_body_and_layer_wise_decay_scale_every_familys_updates(family):
    """BERT's case is tests/test_bert_finetune.py; a GPT decoder and a T5 encoder under a token
    head follow the same rule: one SGD step of rate 1 on unit gradients moves each parameter by
    its factor."""
    import dataclasses  # noqa: PLC0415

    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from lm import models, optimizer, tasks  # noqa: PLC0415

    def updates(**finetune):
        config = _config(family, **{"train.objective": "token_classification", "model.num_classes": 3,
                                    "model.classify": "token", "optimizer.name": "sgd", "optimizer.momentum": 0.0,
                                    "optimizer.warmup_steps": 0, "optimizer.schedule": "constant",
                                    "optimizer.learning_rate": 1.0, "optimizer.weight_decay": 0.0,
                                    "optimizer.grad_clip_norm": 0.0,
                                    **{f"finetune.{k}": v for k, v in finetune.items()}})
        objective = tasks.objective(config)
        model = models.build(dataclasses.replace(config.model, vocab_size=100))
        params = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), jax.eval_shape(
            lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), *objective.init_inputs())["params"])))
        tx = optimizer.for_task(config, objective)
        moved = tx.update(params, tx.init(params), params)[0]
        return {jax.tree_util.keystr(path): float(jnp.abs(leaf).max())
                for path, leaf in jax.tree_util.tree_flatten_with_path(moved)[0]}

    stack = "decoder" if family == "gpt" else "encoder"
    decayed = updates(layer_lr_decay=0.5)  # 2 layers: the top learns at 1/2, the bottom 1/4, embeddings 1/8
    top = {k: v for k, v in decayed.items() if f"['{stack}']['layer_1']" in k}
    bottom = {k: v for k, v in decayed.items() if f"['{stack}']['layer_0']" in k}
    assert top and set(top.values()) == {0.5} and set(bottom.values()) == {0.25}, decayed
    assert decayed["['token_embed']['embedding']"] == 0.125
    assert {v for k, v in decayed.items() if k.startswith("['head']")} == {1.0}
    top_norm = "['final_norm']['scale']" if family == "gpt" else "['encoder_norm']['scale']"
    assert decayed[top_norm] == 1.0, "the final norm learns with the head"
    if family == "t5":  # the relative position table sits at the bottom, with the embeddings
        assert {v for k, v in decayed.items() if k.startswith("['encoder_position_bias']")} == {0.125}
    frozen = updates(freeze_encoder=True)
    assert {v for k, v in frozen.items() if not k.startswith("['head']")} == {0.0}
    assert {v for k, v in frozen.items() if k.startswith("['head']")} == {1.0}
