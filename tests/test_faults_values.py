"""Fault injection, the values a run is handed: NaN steps (skipped, or the run stops and names its
last good checkpoint), checkpoints with non-finite parameters (never written), unusable corpora
(refused before compiling), awkward but valid text (trains), and bad configs (refused with the
field named). The kills, corrupt checkpoints, locks and disk errors are tests/test_faults.py.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoint as checkpoint_lib
from lm import config as config_lib
from lm import optimizer, steps, trainer, workdir as workdir_lib
from lm.config import ConfigError

from conftest import CORPUS, small_config
from test_end_to_end import read_metrics

pytestmark = pytest.mark.faults


# --- Non-finite values. ----------------------------------------------------------------------------------------

def test_train_step_skips_a_nan_update_bitwise():
    """Config-free injection: a batch whose weights hold a NaN makes the loss and gradients NaN."""
    from test_training import TASK, _batch, _state

    cfg = config_lib.OptimizerConfig(warmup_steps=0, schedule="constant")
    tx = optimizer.build(cfg, 10)
    model, state = _state(tx)
    step = jax.jit(steps.make_train_step(model, TASK, tx, optimizer.schedule(cfg, 10)))
    batch = _batch()
    poisoned = {**batch, "weights": batch["weights"].at[1, 3].set(jnp.nan)}
    after, metrics = step(state, poisoned)
    assert float(metrics["skipped"]) == 1.0 and not np.isfinite(float(metrics["loss"]))
    assert int(after.step) == 1  # the step (and so the data order) advances
    jax.tree.map(np.testing.assert_array_equal, (after.params, after.opt_state), (state.params, state.opt_state))
    healthy, metrics = step(after, batch)
    assert float(metrics["skipped"]) == 0.0
    assert not np.array_equal(jax.tree.leaves(healthy.params)[0], jax.tree.leaves(state.params)[0])


def test_nan_steps_are_skipped_then_the_run_stops_after_n_in_a_row(tmp_path):
    config = small_config(**{"train.steps": 20, "train.log_every_steps": 1, "eval.every_steps": 1000,
                             "train.inject_nan_at_steps": "3,12,13,14", "train.max_consecutive_nonfinite": 3})
    with pytest.raises(workdir_lib.RunError) as error:
        trainer.train(config, str(tmp_path))
    message = str(error.value)
    assert "step 14: non-finite loss=nan" in message and "3 non-finite steps in a row" in message
    assert "newest good checkpoint is step 10" in message
    records = {r["step"]: r for r in read_metrics(str(tmp_path)) if "train/loss" in r}
    assert records[3]["train/skipped"] == 1.0 and np.isnan(records[3]["train/loss"])
    assert [s for s, r in records.items() if r["train/skipped"]] == [3, 12, 13]  # 14 stopped before its log
    assert all(np.isfinite(r["train/loss"]) for s, r in records.items() if s not in (3, 12, 13))
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [10]


def test_stop_mode_stops_at_the_first_nan_and_names_the_last_good_checkpoint(tmp_path):
    config = small_config(**{"train.steps": 20, "checkpoint.every_steps": 4, "eval.every_steps": 1000,
                             "train.nonfinite": "stop", "train.inject_nan_at_steps": "6"})
    with pytest.raises(workdir_lib.RunError, match=r"step 6: non-finite loss=nan.*train.nonfinite=stop.*"
                                                   r"newest good checkpoint is step 4"):
        trainer.train(config, str(tmp_path))


def test_a_checkpoint_with_nonfinite_parameters_is_never_written(tmp_path):
    state = {"params": {"w": jnp.ones((3, 3)).at[1, 1].set(jnp.inf)}, "step": jnp.int32(5)}
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "c"), config_lib.CheckpointConfig(async_save=False))
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"non-finite values in \['params'\]\['w'\]"):
        checkpointer.save(5, state, None)
    checkpointer.close()
    assert not [name for name in os.listdir(tmp_path / "c") if name.startswith("5")]


# --- Bad data and bad config. ----------------------------------------------------------------------------------

def _write(path, content: bytes):
    path.write_bytes(content)
    return str(path)


def _data_config(tmp_path, train_file, **overrides):
    values = {"data.train_files": train_file, "data.cache_dir": str(tmp_path / "cache"), "train.steps": 3,
              "train.log_every_steps": 1, "eval.every_steps": 3, "train.sample_tokens": 4}
    values.update(overrides)
    return small_config(**values)


TEXT = CORPUS.read_bytes()[:200_000]


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"   \n\n\t\x00\x01  \n", "empty"),
    (TEXT[:1200], "fewer than train.batch_size"),
], ids=["empty-file", "only-whitespace-and-control", "shorter-than-a-batch"])
def test_unusable_corpora_are_refused_before_compiling(content, message, tmp_path):
    train_file = _write(tmp_path / "train.txt", content)
    started = time.time()
    with pytest.raises(ConfigError, match=message):
        trainer.train(_data_config(tmp_path, train_file), str(tmp_path / "w"))
    assert time.time() - started < 60


def test_awkward_but_valid_text_trains(tmp_path):
    """Invalid UTF-8, a 300,000-character line with no newline, and hundreds of documents far
    shorter than a sequence, in one corpus: replaced, tokenized and packed, and the run trains."""
    short_documents = b"\n\n".join(b"Doc %d: to be." % i for i in range(400))
    content = (TEXT[:100_000] + b"\n\nbroken \xff\xfe\xc3 bytes \x80 here\n\n" + b"x" * 300_000 + b"\n\n"
               + short_documents + b"\n\n" + TEXT[100_000:])
    train_file = _write(tmp_path / "train.txt", content)
    config = _data_config(tmp_path, train_file, **{"data.document_unit": "paragraph"})
    metrics = trainer.train(config, str(tmp_path / "w"))
    assert np.isfinite(metrics["eval/loss"])
    from lm.data import pipeline
    corpus = pipeline.prepare(config.data, config.tokenizer)
    assert corpus.train_tokens.max() < corpus.tokenizer.vocab_size
    stream = corpus.tokenizer.decode(corpus.train_tokens[:400_000])
    assert "\ufffd" in stream and "x" * 1000 in stream
    window = pipeline.Windows(corpus.train_tokens, 64, corpus.tokenizer.eos_id, corpus.tokenizer.pad_id,
                              corpus.tokenizer.byte_lengths)
    packed = [window[i]["segment_ids"].max() for i in range(len(window))]
    assert max(packed) >= 3  # several short documents share one sequence


@pytest.mark.parametrize("overrides,message", [
    ({"model.vocab_size": 300}, "smaller than the tokenizer's vocabulary"),
    ({"tokenizer.path": "GARBAGE"}, "is not a sentencepiece model"),
    ({"train.nonfinite": "ignore"}, "choose one of skip, stop"),
    ({"train.max_consecutive_nonfinite": 0}, "must be positive"),
    ({"train.inject_nan_at_steps": "3,x"}, "comma separated step numbers"),
    ({"data.seq_len": 128}, "longer than model.max_len"),
], ids=["vocab-mismatch", "not-a-tokenizer", "nonfinite-choice", "max-consecutive", "nan-steps", "seq-len"])
def test_bad_configs_are_refused_with_the_field_named(overrides, message, tmp_path):
    if overrides.get("tokenizer.path") == "GARBAGE":
        overrides = {"tokenizer.path": _write(tmp_path / "bad.model", b"not a sentencepiece model")}
    started = time.time()
    with pytest.raises(ConfigError, match=message):
        trainer.train(small_config(**overrides), str(tmp_path / "w"))
    assert time.time() - started < 60
