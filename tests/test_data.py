"""Data: cleaning, tokenizer, the local-text tfds builder, packing, iteration and its state."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm import config as config_lib
from lm.config import ConfigError
from lm.data import corpus, pipeline, text, tokenizer as tokenizer_lib

from conftest import CORPUS


def test_clean_normalises_unicode_controls_and_blank_lines():
    raw = "Cafe\u0301\r\nline\x07 two  \n\n\n\n\nend\x00\t!\n"
    assert text.clean(raw) == "Caf\u00e9\nline two\n\nend\t!"
    assert text.clean(" \n\x01\n ") == ""
    assert text.decode_utf8(b"ok \xff") == "ok \ufffd"


@pytest.fixture(scope="module")
def shakespeare_tokenizer():
    return tokenizer_lib.train([CORPUS.read_text()], config_lib.TokenizerConfig(vocab_size=400))


def test_tokenizer_round_trips_any_text_and_counts_bytes(shakespeare_tokenizer):
    tok = shakespeare_tokenizer
    sample = "ROMEO:\nWhat light through yonder window breaks?\n  Zoë — 東京 ✓\n"
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample  # byte fallback: nothing is lost, not even unseen characters
    assert int(tok.byte_lengths[ids].sum()) == len(sample.encode())
    assert tok.encode("\n") == [tok.piece_id("\n")]  # newline is its own piece
    assert tok.vocab_size == 400 and tok.eos_id == tokenizer_lib.EOS_ID


def test_tokenizer_file_round_trip(tmp_path, shakespeare_tokenizer):
    path = tmp_path / "t.model"
    shakespeare_tokenizer.save(str(path))
    loaded = tokenizer_lib.Tokenizer.load(str(path))
    assert loaded.encode("To be, or not to be") == shakespeare_tokenizer.encode("To be, or not to be")
    with pytest.raises(ConfigError, match="does not exist"):
        tokenizer_lib.Tokenizer.load(str(tmp_path / "missing.model"))


def test_local_text_builder_splits_ninety_ten_and_cleans(tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(f"Title {i}\r\n\n\n\nfirst paragraph {i}\nmore\n\nsecond paragraph {i}\n")
        files.append(str(path))
    data = config_lib.DataConfig(train_files=",".join(files), document_unit="paragraph", validation_fraction=0.34)
    train = list(corpus.open_split(data, "train"))
    validation = list(corpus.open_split(data, "validation"))
    assert len(train) + len(validation) == 9  # paragraphs are never cut in two
    assert all("\r" not in d and "\n\n" not in d for d in train + validation)
    train_chars, val_chars = sum(map(len, train)), sum(map(len, validation))
    assert 0.2 < val_chars / (train_chars + val_chars) < 0.45


def test_shipped_corpus_splits_at_ninety_percent():
    data = config_lib.DataConfig()
    train = "".join(corpus.open_split(data, "train"))
    validation = "".join(corpus.open_split(data, "validation"))
    assert abs(len(validation) / (len(train) + len(validation)) - 0.1) < 0.001
    assert train.startswith("First Citizen:") and CORPUS.read_text().rstrip().endswith(validation[-40:])


def test_windows_pack_documents_with_segments_and_positions():
    eos, pad = 3, 0
    stream = np.array([eos, 10, 11, 12, eos, 20, 21, eos, 30, eos], np.uint16)
    windows = pipeline.Windows(stream, 4, eos, pad, np.ones(64, np.int32), keep_partial=True)
    assert len(windows) == 3  # (10 - 1) / 4 -> 2 full windows and a partial one
    first, second, last = windows[0], windows[1], windows[2]
    np.testing.assert_array_equal(first["inputs"], [eos, 10, 11, 12])
    np.testing.assert_array_equal(first["targets"], [10, 11, 12, eos])
    np.testing.assert_array_equal(second["inputs"], [eos, 20, 21, eos])
    np.testing.assert_array_equal(second["segment_ids"], [1, 1, 1, 2])  # a new document opens at each EOS
    np.testing.assert_array_equal(second["positions"], [0, 1, 2, 0])
    np.testing.assert_array_equal(last["inputs"], [30, eos, pad, pad])  # the final EOS is only a target
    np.testing.assert_array_equal(last["weights"], [1, 0, 0, 0])
    np.testing.assert_array_equal(last["segment_ids"], [1, 0, 0, 0])
    # every token after the first is a target exactly once
    targets = np.concatenate([w["targets"][w["weights"] > 0] for w in (first, second, last)])
    np.testing.assert_array_equal(targets, stream[1:])


@pytest.fixture(scope="module")
def shakespeare_corpus():
    return pipeline.prepare(config_lib.DataConfig(), config_lib.TokenizerConfig(vocab_size=512))


def test_prepare_counts_validation_bytes_and_caches(shakespeare_corpus):
    c = shakespeare_corpus
    assert c.validation_bytes == sum(len(d.encode()) for d in corpus.open_split(config_lib.DataConfig(), "validation"))
    total_bytes = sum(b["target_bytes"].sum() for b in pipeline.eval_batches(c, 64, 16))
    assert total_bytes == c.validation_bytes  # bits per byte divides by exactly the validation text
    again = pipeline.prepare(config_lib.DataConfig(), config_lib.TokenizerConfig(vocab_size=512))
    assert again.tokenizer.fingerprint == c.tokenizer.fingerprint
    np.testing.assert_array_equal(again.train_tokens, c.train_tokens)


def test_train_iterator_is_deterministic_and_resumes_from_its_state(shakespeare_corpus):
    first = pipeline.train_iterator(shakespeare_corpus, 64, 8, seed=1)
    batches = [next(first)["inputs"] for _ in range(5)]
    state_after_two = None
    second = pipeline.train_iterator(shakespeare_corpus, 64, 8, seed=1)
    for i in range(2):
        np.testing.assert_array_equal(next(second)["inputs"], batches[i])
    state_after_two = second.get_state()
    resumed = pipeline.train_iterator(shakespeare_corpus, 64, 8, seed=1)
    resumed.set_state(state_after_two)
    for i in range(2, 5):
        np.testing.assert_array_equal(next(resumed)["inputs"], batches[i])
    other_seed = pipeline.train_iterator(shakespeare_corpus, 64, 8, seed=2)
    assert not np.array_equal(next(other_seed)["inputs"], batches[0])


def test_each_process_reads_its_own_rows_of_the_global_batch(shakespeare_corpus):
    whole = next(pipeline.train_iterator(shakespeare_corpus, 64, 8, seed=0))["inputs"]
    parts = [next(pipeline.train_iterator(shakespeare_corpus, 64, 8, seed=0, process_index=p, process_count=2))
             ["inputs"] for p in range(2)]
    assert parts[0].shape == (4, 64)
    rows = lambda a: sorted(map(tuple, a))  # noqa: E731
    assert rows(np.concatenate(parts)) == rows(whole)
    with pytest.raises(ConfigError, match="does not divide"):
        pipeline.train_iterator(shakespeare_corpus, 64, 9, seed=0, process_count=2)


def test_registered_tfds_dataset_by_name():
    """lm1b can't be downloaded here; tfds's mock_data stands in for its files."""
    data = config_lib.DataConfig(tfds_name="lm1b", eval_split="test")
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        train = corpus.open_split(data, "train")
        assert len(train) == 40 and isinstance(train[0], str)
        prepared = pipeline.prepare(data, config_lib.TokenizerConfig(vocab_size=300))
    assert len(prepared.train_tokens) > 40  # every mock document tokenized, each opened by an EOS
    assert int((np.asarray(prepared.train_tokens) == prepared.tokenizer.eos_id).sum()) == 41


def test_unprepared_tfds_dataset_says_how_to_download(tmp_path):
    data = config_lib.DataConfig(tfds_name="lm1b", tfds_data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="allow_download=true"):
        corpus.open_split(data, "train")


def test_missing_and_empty_corpora_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no file matches"):
        corpus.open_split(config_lib.DataConfig(train_files=str(tmp_path / "nope.txt")), "train")
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n\x00\n")
    with pytest.raises(ConfigError, match="empty"):
        pipeline.prepare(config_lib.DataConfig(train_files=str(empty)), config_lib.TokenizerConfig())


def test_gzipped_text_files_read_as_plain_text(tmp_path):
    import gzip  # noqa: PLC0415
    plain, packed = tmp_path / "plain.txt", tmp_path / "packed.txt.gz"
    plain.write_text("Ein Hund rennt.\nZwei Kinder spielen.\n")
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("A dog runs.\nTwo children play.\n")
    data = config_lib.DataConfig(train_files=f"{plain},{packed}", validation_files=str(plain))
    train = list(corpus.open_split(data, "train"))
    assert train == ["Ein Hund rennt.\nZwei Kinder spielen.", "A dog runs.\nTwo children play."]
