"""Scoring a split (lm/evaluation.py): BLEU, ROUGE and exact match against hand-computed values and
the libraries, several references per example (DialogSum's test split), the lead baseline."""

import json

import numpy as np
import pytest

from lm import config as config_lib
from lm import evaluation
from lm.data import seq2seq as seq2seq_data
from tests.conftest import shared_data

pytestmark = pytest.mark.t5

PREDICTIONS = ["the cat sat on the mat", "a dog runs in the park today"]
FIRST = ["the cat is on the mat", "a dog walks through a park"]
SECOND = ["a cat sat on the mat", "a dog runs in the park today"]


def test_several_references_score_as_the_libraries_do():
    sacrebleu = pytest.importorskip("sacrebleu")
    from rouge_score import rouge_scorer

    both = evaluation.scores(PREDICTIONS, [list(refs) for refs in zip(FIRST, SECOND)])
    assert both["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [FIRST, SECOND]).score)
    assert both["bleu_signature"].startswith("nrefs:2|")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        best = [max(scorer.score(ref, pred)[name].fmeasure for ref in refs)
                for pred, refs in zip(PREDICTIONS, zip(FIRST, SECOND))]
        assert both[name] == pytest.approx(100 * sum(best) / len(best))
    # The second prediction equals its second reference: with both references it scores higher
    # than against the first alone, on every measure.
    first_only = evaluation.scores(PREDICTIONS, FIRST)
    assert all(both[k] > first_only[k] for k in ("bleu", "rouge1", "rouge2", "rougeL"))
    with pytest.raises(ValueError, match="same number of references"):
        evaluation.scores(PREDICTIONS, [["x"], ["y", "z"]])


def _test_config(path, keys):
    return config_lib.from_config_dict({
        "model": {"family": "t5", "positions": "relative"}, "train": {"objective": "seq2seq"},
        "seq2seq": {"input_key": "dialogue", "target_key": "summary", "test_files": str(path),
                    "test_reference_keys": keys, "input_prefix": "summarize: "}})


def test_test_split_reads_every_reference_and_trains_on_the_first(tmp_path):
    path = tmp_path / "test.jsonl"
    with open(path, "w") as f:
        for i in range(3):
            f.write(json.dumps({"dialogue": f"#Person1#: hello {i}", "summary1": f"one {i}", "summary2": f"two {i}",
                                "summary3": f"three {i}"}) + "\n")
    config = _test_config(path, "summary1,summary2,summary3")
    examples = seq2seq_data.read_examples(config, "test")
    assert examples[2] == ("summarize: #Person1#: hello 2", "one 2", "two 2", "three 2")
    assert seq2seq_data.read_split(config, "test")[2] == ("summarize: #Person1#: hello 2", "one 2")
    with pytest.raises(config_lib.ConfigError, match="no field 'summary4'.*test_reference_keys"):
        seq2seq_data.read_examples(_test_config(path, "summary1,summary4"), "test")
    with pytest.raises(config_lib.ConfigError, match="no field 'summary'"):
        seq2seq_data.read_examples(_test_config(path, ""), "test")  # one reference: target_key


def test_dialogsum_config_wires_the_three_reference_test_split():
    shared_data("dialogsum")
    from configs import finetune_dialogsum

    config = config_lib.from_config_dict(finetune_dialogsum.get_config().to_dict())
    examples = seq2seq_data.read_examples(config, "test")
    assert len(examples) == 500 and {len(example) for example in examples} == {4}
    assert sum(example[1] != example[2] != example[3] for example in examples) > 450  # three different summaries


def test_bleu_and_rouge_against_hand_computed_values():
    prediction, reference = "the cat sat on the mat", "the cat is on the mat"
    result = evaluation.scores([prediction], [reference])
    # BLEU by hand: n-gram precisions 5/6, 3/5, 1/4 and 0/3; sacrebleu's default "exp"
    # smoothing turns the zero 4-gram count into 1 / (2 * 3); equal lengths: no brevity penalty.
    assert result["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25, abs=1e-6)
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert result["bleu_precisions"] == pytest.approx([100 * 5 / 6, 100 * 3 / 5, 100 * 1 / 4, 100 / 6])  # smoothed
    assert result["bleu_brevity_penalty"] == 1.0 and result["length_ratio"] == 1.0
    # ROUGE-1: 5 shared unigrams of 6 each side -> F1 5/6; ROUGE-2: 3 shared bigrams of 5 -> 3/5;
    # ROUGE-L: longest common subsequence "the cat on the mat" = 5 -> 5/6.
    assert result["rouge1"] == pytest.approx(100 * 5 / 6)
    assert result["rouge2"] == pytest.approx(100 * 3 / 5)
    assert result["rougeL"] == pytest.approx(100 * 5 / 6)
    perfect = evaluation.scores(["Ein Hund rennt im Park."], ["Ein Hund rennt im Park."])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge2"] == pytest.approx(100.0)
    # Half the reference's 8 tokens: brevity penalty exp(1 - 8/4), every precision 100.
    short = evaluation.scores(["Ein Hund rennt im"], ["Ein Hund rennt im Park und bellt ."])
    assert short["length_ratio"] == pytest.approx(0.5)
    assert short["bleu_brevity_penalty"] == pytest.approx(np.exp(1 - 2))
    assert short["bleu"] == pytest.approx(100 * np.exp(1 - 2))
    # Exact match (label words decoded: the accuracy), against any reference, outer spaces ignored.
    assert result["exact_match"] == 0.0 and perfect["exact_match"] == 100.0
    labels = evaluation.scores(["positive", " negative", "negative"], [["positive", "x"], ["x", "negative"], ["x", "y"]])
    assert labels["exact_match"] == pytest.approx(100 * 2 / 3)


def test_lead_baseline_takes_the_first_sentences():
    dialogue = "#Person1#: Hello, how are you? I am fine.\n#Person2#: Good. Bye."
    assert evaluation.lead(dialogue, 2) == "#Person1#: Hello, how are you? I am fine."
    assert evaluation.lead(dialogue, 3) == "#Person1#: Hello, how are you? I am fine. #Person2#: Good."
