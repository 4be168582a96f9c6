"""Extractive QA data and metrics: SQuAD-format reading, strided windows whose start/end labels
map back to the answer text through the token offsets, best-span prediction, EM and F1."""

from pathlib import Path

import numpy as np
import pytest

from conftest import CORPUS
from lm import extractive_qa
from lm.config import TokenizerConfig
from lm.data import squad
from lm.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.finetune
SAMPLE = str(Path(__file__).parent / "data" / "squad_sample.json")


@pytest.fixture(scope="module")
def tokenizer():
    texts = [CORPUS.read_text()[:200_000]] + [e.context for e in squad.read_squad_json(SAMPLE)]
    return tokenizer_lib.train(texts, TokenizerConfig(vocab_size=600))


def test_normalisation_exact_match_and_f1_hand_computed():
    assert extractive_qa.normalize_answer("The  Ninth of May!") == "ninth of may"
    assert extractive_qa.exact_match("the ninth of May.", ["ninth of may"]) == 1.0
    assert extractive_qa.exact_match("May", ["ninth of may"]) == 0.0
    # "ninth May" vs "ninth of may": 2 common tokens, precision 2/2, recall 2/3 -> F1 0.8.
    assert extractive_qa.f1("ninth May", ["ninth of may"]) == pytest.approx(0.8)
    assert extractive_qa.f1("ninth May", ["nothing", "ninth of may"]) == pytest.approx(0.8)  # best reference
    assert extractive_qa.f1("", ["a"]) == 1.0  # both normalise to empty
    assert extractive_qa.scores(["1872", "Lind"], [["1872"], ["Marta Lind"]]) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})


def test_reads_squad_sample():
    examples = squad.read_squad_json(SAMPLE)
    assert [e.id for e in examples] == [f"q{i}" for i in range(1, 8)]
    assert examples[1].answers == ("Marta Lind", "Lind") and all(squad.answer_in_context(e) for e in examples)


@pytest.mark.parametrize("max_len,doc_stride", [(256, 64), (48, 16), (40, 7)])
def test_window_labels_map_back_to_the_answer(tokenizer, max_len, doc_stride):
    layout = squad.Layout(prefix=(tokenizer.eos_id,), middle=(tokenizer.piece_id("\n"),))
    for index, example in enumerate(squad.read_squad_json(SAMPLE)):
        windows = squad.windows(example, index, tokenizer, layout, max_len, doc_stride)
        context_ids = tokenizer.encode(example.context)
        assert all(len(w.input_ids) <= max_len for w in windows)
        labelled = [w for w in windows if w.start_position > 0]
        assert labelled, f"{example.id}: no window holds the answer"
        for w in windows:
            assert 0 <= w.start_position <= w.end_position < len(w.input_ids)
            assert w.segment_ids[w.start_position] == (1 if w.start_position else 0)
        for w in labelled:
            assert extractive_qa.answer_text(example.context, w.context_spans, w.start_position,
                                             w.end_position) == example.answers[0]
        # The chunks, in order, cover the whole context.
        covered = set()
        for w in windows:
            context_positions = np.flatnonzero(w.context_spans[:, 0] >= 0)
            covered |= {tuple(w.context_spans[p]) for p in context_positions}
        _, spans = tokenizer.encode_with_offsets(example.context)
        assert covered == set(map(tuple, spans)) and len(context_ids) == len(spans)
        if max_len < 64 and example.id == "q6":  # the long paragraph: several overlapping windows
            assert len(windows) > 3


def test_prediction_picks_the_best_span_across_windows(tokenizer):
    example = squad.read_squad_json(SAMPLE)[5]
    layout = squad.Layout(prefix=(tokenizer.eos_id,), middle=(tokenizer.piece_id("\n"),))
    windows = squad.windows(example, 0, tokenizer, layout, 48, 16)
    # Logits that point at the labelled span in labelled windows and weakly elsewhere.
    outputs = []
    for w in windows:
        start_logits = np.zeros(len(w.input_ids))
        end_logits = np.zeros(len(w.input_ids))
        if w.start_position:
            start_logits[w.start_position] = end_logits[w.end_position] = 5.0
        else:
            start_logits[-1] = end_logits[-1] = 1.0
        outputs.append((start_logits, end_logits, w.context_spans))
    assert extractive_qa.predict(example.context, outputs) == "the ninth of May"
    # Never a span outside the context, never end before start, never longer than allowed.
    start_logits = np.arange(len(windows[0].input_ids), dtype=float)[::-1]
    found = extractive_qa.best_span(start_logits, start_logits[::-1].copy(), windows[0].context_spans, 3)
    assert windows[0].context_spans[found[1], 0] >= 0 and 0 <= found[2] - found[1] < 3


def test_hf_tokenizer_offsets_work_the_same(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    examples = squad.read_squad_json(SAMPLE)
    tok.train_from_iterator([e.context for e in examples] + CORPUS.read_text().splitlines()[:2000],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = tokenizer_lib.Tokenizer.load(str(tmp_path / "tokenizer.json"))
    layout = squad.Layout(prefix=(hf.eos_id,), middle=(hf.eos_id,))
    for index, example in enumerate(examples):
        for w in squad.windows(example, index, hf, layout, 40, 10):
            if w.start_position:
                assert extractive_qa.answer_text(example.context, w.context_spans, w.start_position,
                                                 w.end_position) == example.answers[0]


def test_tfds_squad_mock_data_reads_and_windows(tokenizer):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("squad", split="validation")
        examples = [squad.from_tfds(source[i]) for i in range(len(source))]
    assert len(examples) == 6 and all(isinstance(e.context, str) and e.id for e in examples)
    layout = squad.Layout(prefix=(tokenizer.eos_id,), middle=(tokenizer.piece_id("\n"),))
    for index, example in enumerate(examples):
        assert len(example.answers) == len(example.answer_starts)
        windows = squad.windows(example, index, tokenizer, layout, 32, 8)
        assert windows and all(len(w.input_ids) <= 32 for w in windows)
        # Mock answers are random strings, not where their starts say: no window is labelled.
        if not squad.answer_in_context(example):
            assert all(w.start_position == 0 for w in windows)
