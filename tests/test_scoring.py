"""Scoring text and multiple choice with a trained causal LM (lm/scoring.py, tools/evaluate.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lm import metrics as metrics_lib
from lm import scoring
from lm.data import tokenizer as tokenizer_lib
from tests.conftest import CORPUS, REPO, small_config

# Which colour goes with which animal: only the context tells. Choices differ in length, so
# a score that ignored the context, or normalised wrongly, would fail some questions.
FACTS = {"the cat likes": " red", "the dog likes": " green", "the fox likes": " blue", "the owl likes": " pink",
         "the bee likes": " gold"}


@pytest.fixture(scope="module")
def memorised_run(tmp_path_factory, trained_tiny_workdir):
    """A small GPT that memorised FACTS, with two validation files (the facts and a Shakespeare
    slice: several documents, a partial last window)."""
    from lm import trainer

    root = tmp_path_factory.mktemp("memorised")
    lines = [f"{context}{colour}." for context, colour in FACTS.items()]
    rng = np.random.default_rng(0)
    (root / "facts.txt").write_text("\n".join(lines[i] for i in rng.integers(0, len(lines), 3000)) + "\n")
    (root / "facts_validation.txt").write_text("\n".join(lines * 3) + "\n")
    (root / "shakespeare_validation.txt").write_text(CORPUS.read_text()[:3000])
    validation = f"{root}/*_validation.txt"
    workdir = str(root / "run")
    trainer.train(small_config(**{
        "data.train_files": str(root / "facts.txt"), "data.validation_files": validation,
        "tokenizer.path": f"{trained_tiny_workdir}/tokenizer.model", "train.steps": 150, "eval.every_steps": 150,
        "eval.max_batches": 0, "checkpoint.every_steps": 150, "optimizer.learning_rate": 1e-2}), workdir)
    return workdir, validation


def test_text_files_reproduce_the_runs_validation_metrics(memorised_run, tmp_path):
    workdir, validation = memorised_run
    out = tmp_path / "scores.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "evaluate.py"), f"--workdir={workdir}",
                    f"--text_files={validation}", f"--json={out}", "--batch_size=4"], check=True, cwd=REPO)
    scores = json.loads(out.read_text())
    logged = metrics_lib.records(workdir, "eval/bits_per_byte")[150]
    assert scores["step"] == 150 and scores["documents"] == 2
    for key in ("loss", "perplexity", "bits_per_byte"):
        assert scores[key] == pytest.approx(logged[f"eval/{key}"], rel=1e-4), key
    assert scores["token_accuracy"] == pytest.approx(logged["eval/accuracy"], rel=1e-4)


def test_multiple_choice_prefers_the_memorised_continuation(memorised_run, tmp_path):
    workdir, _ = memorised_run
    colours = list(FACTS.values())
    path = tmp_path / "questions.jsonl"
    with open(path, "w") as f:
        for context, colour in FACTS.items():
            f.write(json.dumps({"context": context, "choices": colours, "label": colours.index(colour)}) + "\n")
    scorer = scoring.Scorer.load(workdir, batch_size=4)
    result = scoring.score_choices(scorer, scoring.read_questions(str(path)), progress=False)
    assert result == {"accuracy": 1.0, "accuracy_norm": 1.0, "questions": len(FACTS)}
    # Every question has the same choices: a score blind to the context would answer them all alike.
    with open(path, "w") as f:
        f.write(json.dumps({"context": "the cat likes", "choices": [" red"], "label": 0}) + "\n")
    with pytest.raises(scoring.ConfigError, match="two or more choices"):
        scoring.read_questions(str(path))


def test_continuation_row_weights_exactly_the_choice_tokens(trained_tiny_workdir):
    tokenizer = tokenizer_lib.Tokenizer.load(f"{trained_tiny_workdir}/tokenizer.model")
    row = scoring.continuation_row(tokenizer, "To be, or not to", " be: that is", seq_len=16)
    scored = row["targets"][row["weights"] > 0]
    assert tokenizer.decode(scored) == " be: that is"
    assert row["inputs"][0] == tokenizer.eos_id and row["positions"][0] == 0
    real = int(row["segment_ids"].sum())
    np.testing.assert_array_equal(row["inputs"][1:real], row["targets"][:real - 1])  # next-token alignment
    # A context longer than the window loses its beginning; the choice stays whole at the end.
    long = scoring.continuation_row(tokenizer, " word" * 40, " end", seq_len=16)
    assert long["weights"][-1] == 1 and tokenizer.decode(long["targets"][long["weights"] > 0]) == " end"
    # A piece spanning the boundary (the context's trailing space joins " end") is scored with the choice.
    spanning = scoring.continuation_row(tokenizer, "the ", "end", seq_len=16)
    assert tokenizer.decode(spanning["targets"][spanning["weights"] > 0]).strip() == "end"
