"""Token classification data and metrics: CoNLL reading, subword-to-word alignment, entity-level
scores in seqeval's definition, the dictionary baseline."""

import numpy as np
import pytest

from conftest import shared_data
from lm import tagging
from lm.config import TokenizerConfig
from lm.data import conll
from lm.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.finetune


def test_entities_hand_computed():
    assert tagging.entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    # An I- with nothing open starts an entity; a change of type ends one; B after B splits.
    assert tagging.entities(["I-PER", "I-LOC", "B-LOC", "B-LOC", "I-LOC"]) == {
        ("PER", 0, 0), ("LOC", 1, 1), ("LOC", 2, 2), ("LOC", 3, 4)}
    assert tagging.entities(["B-creative-work", "I-creative-work"]) == {("creative-work", 0, 1)}
    assert tagging.entities(["O", "O"]) == set()


def test_scores_hand_computed():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    # PER right; LOC wrong boundary (two words); ORG missed; one spurious MISC.
    predicted = [["B-PER", "I-PER", "B-LOC", "I-LOC"], ["O", "B-MISC"]]
    scores = tagging.entity_scores(true, predicted)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(1 / 3)
    assert tagging.entity_scores([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    counts = tagging.EntityCounts().add(true[0], predicted[0]) + tagging.EntityCounts().add(true[1], predicted[1])
    assert counts.scores() == scores


def test_scores_equal_seqeval_on_random_tag_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = np.random.default_rng(0)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-creative-work", "I-creative-work", "E-PER", "S-LOC"]
    for trial in range(30):
        true = [list(rng.choice(labels, rng.integers(1, 12))) for _ in range(20)]
        predicted = [[t if rng.random() < 0.6 else str(rng.choice(labels)) for t in sentence] for sentence in true]
        ours = tagging.entity_scores(true, predicted)
        assert ours["precision"] == pytest.approx(seqeval.precision_score(true, predicted, zero_division=0))
        assert ours["recall"] == pytest.approx(seqeval.recall_score(true, predicted, zero_division=0))
        assert ours["f1"] == pytest.approx(seqeval.f1_score(true, predicted, zero_division=0)), trial


def test_dictionary_baseline_tags_training_entity_strings():
    train = [(("I", "love", "New", "York"), ("O", "O", "B-location", "I-location")),
             (("York", "is", "a", "person"), ("B-person", "O", "O", "O")),
             (("York", "again"), ("B-person", "O")), (("New", "York", "York"), ("B-location", "I-location", "O"))]
    tagger = tagging.DictionaryTagger(train)
    assert tagger.tag(["New", "York", "and", "York", "."]) == ["B-location", "I-location", "O", "B-person", "O"]
    assert tagger.tag(["nothing", "here"]) == ["O", "O"]


def test_reads_wnut17_and_aligns_first_subwords(tmp_path):
    folder = shared_data("wnut17")
    train = conll.read_conll(str(folder / "wnut17train.conll"))
    dev = conll.read_conll(str(folder / "emerging.dev.conll"))
    test = conll.read_conll(str(folder / "emerging.test.conll"))
    assert (len(train), len(dev), len(test)) == (3394, 1009, 1287)  # the counts the data README gives
    assert train[0].words[14:17] == ("Empire", "State", "Building")
    assert train[0].tags[14:17] == ("B-location", "I-location", "I-location")
    names = conll.label_names(train)
    assert names[0] == "O" and len(names) == 13 and "B-creative-work" in names
    assert all("," not in tag for s in test for tag in s.tags)

    tok = tokenizer_lib.train((" ".join(s.words) for s in train), TokenizerConfig(vocab_size=1000))
    label_ids = {name: i for i, name in enumerate(names)}
    sentence = train[0]
    ids, word_of_token = conll.encode_words(tok, sentence.words)
    assert ids == tok.encode(" ".join(sentence.words))  # the pieces running text gives
    labels = conll.first_piece_labels(word_of_token, [label_ids[t] for t in sentence.tags])
    firsts = [i for i in range(len(ids)) if word_of_token[i] >= 0 and (i == 0 or word_of_token[i] != word_of_token[i - 1])]
    assert [labels[i] for i in firsts] == [label_ids[t] for t in sentence.tags]
    assert all(labels[i] == conll.IGNORE for i in set(range(len(ids))) - set(firsts))
    assert len(ids) > len(sentence.words)  # some words have several pieces, so the rule matters
    # Predicting each token's own label gives back the word tags; words cut off are predicted O.
    predictions = np.where(labels >= 0, labels, 5)
    assert conll.word_predictions(predictions, word_of_token, len(sentence.words)) == \
        [label_ids[t] for t in sentence.tags]
    cut = firsts[15]
    assert conll.word_predictions(predictions[:cut], word_of_token[:cut], len(sentence.words))[15:] == [0] * (
        len(sentence.words) - 15)


def test_a_lone_space_piece_is_not_a_words_first_piece():
    """A small vocabulary splits " kofi" into "▁" + "k" + ...: the label goes on "k", the first
    piece that holds the word (a causal model at "▁" has not seen the word yet)."""
    tok = tokenizer_lib.train(["we saw them near the old market today and then went home again"] * 50,
                              TokenizerConfig(vocab_size=280))
    words = ["we", "saw", "kofi", "mensah"]
    ids, word_of_token = conll.encode_words(tok, words)
    assert ids == tok.encode(" ".join(words))
    gaps = [i for i, w in enumerate(word_of_token) if w < 0]
    assert gaps and all(tok.decode([ids[i]]).strip() == "" for i in gaps)
    labels = conll.first_piece_labels(word_of_token, [0, 0, 3, 4])
    labelled_pieces = [tok.decode([ids[i]]) for i in np.flatnonzero(labels >= 0)]
    assert [p.strip() for p in labelled_pieces][2:] == ["k", "m"] and np.count_nonzero(labels >= 0) == 4


def test_conll_refuses_malformed_lines(tmp_path):
    from lm.config import ConfigError  # noqa: PLC0415
    (tmp_path / "bad.conll").write_text("word\tO\nlonely\n")
    with pytest.raises(ConfigError, match="bad.conll:2"):
        conll.read_conll(str(tmp_path / "bad.conll"))


def test_device_entity_counts_equal_the_host_definition_with_skipped_positions():
    """entity_sums (jitted, over rows with non-first pieces and padding interleaved) counts what
    EntityCounts counts on the words alone."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-creative-work", "I-creative-work"]
    prefix_C, type_C = (jnp.asarray(c) for c in tagging.tag_codes(names))
    rng = np.random.default_rng(1)
    rows, length = 64, 24
    valid = rng.random((rows, length)) < 0.7
    true = rng.integers(0, len(names), (rows, length))
    predicted = np.where(rng.random((rows, length)) < 0.6, true, rng.integers(0, len(names), (rows, length)))
    counts = jax.jit(tagging.entity_sums)(jnp.asarray(predicted), jnp.asarray(true), jnp.asarray(valid), prefix_C,
                                          type_C)
    expected = tagging.EntityCounts()
    for r in range(rows):
        expected.add([names[t] for t in true[r][valid[r]]], [names[t] for t in predicted[r][valid[r]]])
    assert tuple(int(c) for c in counts) == (expected.correct, expected.predicted, expected.true)
    assert expected.correct > 10  # the random rows do have matching entities
