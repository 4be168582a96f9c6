"""Seq2seq scoring with several references per example (DialogSum's test split)."""

import json

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
