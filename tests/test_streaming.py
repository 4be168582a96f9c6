"""Streaming input (lm/data/streaming.py): rows laid out as the pre-pass path's, resumable state,
workers that change nothing, mixtures in proportion, and streamed T5 pretraining.
The kill -9 test is in test_faults.py, the two-process test in test_multihost.py."""

import dataclasses
import json

import numpy as np
import pytest

from lm import trainer
from lm.data import packing, pipeline, records
from lm.tasks import causal_lm

from conftest import CORPUS, small_config


def streaming_config(**overrides):
    return small_config(**{"data.streaming": True, **overrides})


@pytest.fixture(scope="module")
def corpus():
    return causal_lm.CausalLMPipeline(streaming_config()).prepare()


def batches(config, corpus, count, state=None, process_index=0, process_count=1):
    iterator = causal_lm.CausalLMPipeline(config).train_iterator(corpus, process_index, process_count)
    if state is not None:
        iterator.set_state(state)
    return iterator, [next(iterator) for _ in range(count)]


def test_records_are_the_file_cut_at_line_boundaries(tmp_path):
    text = ("line of text\n" * 3000 + "\n") * 4 + "a" * 200_000 + "\nend"
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    pieces = list(records.cut_pieces(str(path)))
    assert b"".join(pieces) == text.encode() and len(pieces) > 3
    assert all(piece.endswith(b"\n") for piece in pieces[:-1] if b"a" * 1000 not in piece)


def test_rows_are_packed_like_the_pre_pass_rows(corpus):
    config = streaming_config()
    _, (batch, after) = batches(config, corpus, 2)
    pre_pass = pipeline.prepare(config.data, config.tokenizer)
    reference = next(pipeline.train_iterator(pre_pass, 64, 8, 0))
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {k: (v.shape, v.dtype) for k, v in reference.items()}
    eos = corpus.tokenizer.eos_id
    for row in range(8):
        window = np.append(batch["inputs"][row], batch["targets"][row][-1])
        expected = packing.packed_row(window, 64, eos, corpus.tokenizer.byte_lengths)
        assert all(np.array_equal(batch[k][row], expected[k]) for k in batch)
        # Row k + 1 of a slot continues its stream where row k stopped (windows overlap by one token).
        assert after["inputs"][row][0] == batch["targets"][row][-1]
    assert np.all(batch["weights"] == 1.0) and len({tuple(r) for r in batch["inputs"]}) == 8


def test_state_resumes_bitwise_and_fits_in_json(corpus):
    config = streaming_config()
    iterator, _ = batches(config, corpus, 7)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator) for _ in range(5)]
    _, resumed = batches(config, corpus, 5, state)
    for a, b in zip(expected, resumed):
        assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # worker processes import jax and grain: 10-30 s to start on a loaded 2-core machine
def test_worker_processes_give_the_in_process_batches_and_resume(corpus):
    config = streaming_config()
    _, expected = batches(config, corpus, 6)
    workers = dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=3))
    iterator, got = batches(workers, corpus, 3)
    state = json.loads(json.dumps(iterator.get_state()))
    _, resumed = batches(workers, corpus, 3, state)
    for a, b in zip(expected, got + resumed):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_mixture_rows_follow_the_weights_and_tokens_are_counted_per_source(tmp_path):
    """Two sources with disjoint alphabets, weighted 0.7 / 0.3: over 10,000 rows each row holds
    one source's text only, the shares are within 2 points of the weights, and tokens_seen counts
    the same rows."""
    for name, letters in (("upper", "ABCDEFGHIJ"), ("digits", "0123456789")):
        rng = np.random.default_rng(len(name))
        lines = ["".join(rng.choice(list(letters), 6)) + " " + "".join(rng.choice(list(letters), 4)) for _ in range(4000)]
        (tmp_path / f"{name}.txt").write_text("\n".join(lines))
    mixture = f"upper:{tmp_path}/upper.txt:0.7,digits:{tmp_path}/digits.txt:0.3"
    config = streaming_config(**{"data.mixture": mixture, "data.seq_len": 16, "train.batch_size": 10,
                                 "tokenizer.vocab_size": 300})
    corpus = causal_lm.CausalLMPipeline(config).prepare()
    iterator, rows = batches(config, corpus, 1000)
    tok = corpus.tokenizer
    kinds = []
    for batch in rows:
        for row in batch["inputs"]:
            text = tok.decode([t for t in row if t != tok.eos_id])
            upper, digit = any(c.isupper() for c in text), any(c.isdigit() for c in text)
            assert upper != digit, f"a row mixes sources: {text!r}"
            kinds.append(upper)
    share = float(np.mean(kinds))
    assert abs(share - 0.7) < 0.02, share
    assert iterator.tokens_seen(1000) == {"upper": sum(kinds) * 16, "digits": (len(kinds) - sum(kinds)) * 16}


def test_mixture_syntax_errors_name_the_entry():
    from lm.config import ConfigError

    assert [e.weight for e in records.parse_mixture("a:x.txt:3,b:tfds:c4/en:1")] == [0.75, 0.25]
    assert records.parse_mixture("b:tfds:c4/en:1")[0].spec == "tfds:c4/en"
    with pytest.raises(ConfigError, match="name:spec:weight"):
        records.parse_mixture("a:x.txt")


def t5_streaming_config(**overrides):
    from test_t5 import t5_config

    return t5_config(**{"data.streaming": True, "data.train_files": str(CORPUS), **overrides})


@pytest.mark.t5
def test_t5_span_corruption_rows_from_a_stream_reconstruct_its_windows():
    from lm import tasks
    from lm.data import span_corruption as spans
    from lm.tasks.span_corruption import sentinel_ids

    task = tasks.get(t5_streaming_config()).pipeline
    corpus = task.prepare()
    batch = next(task.train_iterator(corpus))
    assert batch["encoder_inputs"].shape == (8, task.lengths.inputs)
    sentinels, eos = sentinel_ids(corpus.tokenizer), corpus.tokenizer.eos_id
    windows = [spans.reconstruct(batch["encoder_inputs"][r][batch["encoder_segment_ids"][r] > 0],
                                 batch["decoder_targets"][r][batch["decoder_segment_ids"][r] > 0], sentinels, eos)
               for r in range(8)]
    assert all(len(w) == task.lengths.raw for w in windows)
    text = corpus.tokenizer.decode([t for t in windows[0] if t != eos])
    assert text.replace("\n", " ").split()[2] in CORPUS.read_text()  # real text, not padding


@pytest.mark.t5
@pytest.mark.slow  # a minute on a loaded 2-core machine (T5 compile, evaluation and the end-of-run sample)
def test_t5_span_corruption_pretrains_from_a_streamed_source(tmp_path):
    config = t5_streaming_config(**{"train.steps": 4, "eval.every_steps": 4, "checkpoint.every_steps": 4,
                                    "eval.max_batches": 1})
    metrics = trainer.train(config, str(tmp_path / "t5"))
    assert np.isfinite(metrics["eval/loss"])


def test_prepared_folders_raw_and_tokenized_stream_the_same_rows(tmp_path, corpus):
    """tools/prepare_data.py's library: a raw folder and a tokenized one (same tokenizer) give the
    same training rows; a rerun writes only missing shards."""
    import os

    from lm.data import prepare

    files = [str(tmp_path / f"part{i}.txt") for i in range(3)]
    text = CORPUS.read_text()
    for i, path in enumerate(files):
        with open(path, "w") as f:
            f.write(text[i * len(text) // 3:(i + 1) * len(text) // 3])
    tokenizer_path = str(tmp_path / "tok.model")
    corpus.tokenizer.save(tokenizer_path)
    got = {}
    for kind, tokenizer in (("raw", None), ("tokens", corpus.tokenizer)):
        output = str(tmp_path / kind)
        jobs = prepare.plan(output, files=files, tokenizer=tokenizer)
        prepare.run(jobs[:1], output, processes=1, tokenizer=tokenizer)  # interrupted after one shard
        first_written = os.path.getmtime(jobs[0].output)
        manifest = prepare.run(jobs, output, processes=2, tokenizer=tokenizer)
        assert manifest["kind"] == kind and os.path.getmtime(jobs[0].output) == first_written
        config = streaming_config(**{"data.train_files": output, "tokenizer.path": tokenizer_path,
                                     "data.document_unit": "file"})
        pipeline_ = causal_lm.CausalLMPipeline(config)
        got[kind] = next(pipeline_.train_iterator(pipeline_.prepare()))
    assert all(np.array_equal(got["raw"][k], got["tokens"][k]) for k in got["raw"])


@pytest.mark.bert
def test_bert_mlm_nsp_rows_from_a_stream_are_masked_sentence_pairs():
    from lm import tasks
    from bert_setup import bert_config

    config = bert_config(**{"data.streaming": True})
    pipeline_ = tasks.get(config).pipeline
    data = pipeline_.prepare()
    iterator = pipeline_.train_iterator(data)
    batch = next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    after = next(iterator)
    resumed = pipeline_.train_iterator(data)
    resumed.set_state(state)
    assert all(np.array_equal(after[k], v) for k, v in next(resumed).items())
    ids = data.ids
    assert np.all(batch["inputs"][:, 0] == ids.cls) and np.all(batch["nsp_weights"] == 1.0)
    assert 0 < batch["nsp_labels"].mean() < 1 and batch["mlm_weights"].sum() > 0
    assert np.all((batch["inputs"] == ids.sep).sum(axis=1) == 2)  # [CLS] A [SEP] B [SEP]


@pytest.mark.bert
@pytest.mark.slow  # a minute on a loaded 2-core machine (compile and evaluation)
def test_bert_pretrains_from_a_streamed_source(tmp_path):
    from bert_setup import bert_config

    config = bert_config(**{"data.streaming": True, "train.steps": 4, "eval.every_steps": 4,
                            "checkpoint.every_steps": 4, "eval.max_batches": 1})
    metrics = trainer.train(config, str(tmp_path / "bert"))
    assert np.isfinite(metrics["eval/loss"]) and "eval/nsp_accuracy" in metrics
