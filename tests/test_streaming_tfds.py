"""Streaming a registered tfds dataset by name (`data.tfds_name` with `data.streaming=true`): a
real tfds builder, prepared here in array_record format (the format `tfds.data_source` reads
without TensorFlow), streamed into packed rows and trained on."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm import config as config_lib
from lm import trainer
from lm.tasks import causal_lm

from conftest import CORPUS, small_config


class LmStreamTestText(tfds.core.GeneratorBasedBuilder):
    """Tiny-shakespeare's paragraphs as documents: 90% train, 10% validation."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        paragraphs = [p for p in CORPUS.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        cut = int(len(paragraphs) * 0.9)
        return {"train": self._generate_examples(paragraphs[:cut]),
                "validation": self._generate_examples(paragraphs[cut:])}

    def _generate_examples(self, paragraphs):
        for index, paragraph in enumerate(paragraphs):
            yield index, {"text": paragraph}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tfds"))
    LmStreamTestText(data_dir=folder, file_format="array_record").download_and_prepare()
    return folder


def tfds_config(tfds_dir, **overrides):
    return small_config(**{"data.streaming": True, "data.tfds_name": "lm_stream_test_text",
                           "data.tfds_data_dir": tfds_dir, "data.eval_split": "validation", **overrides})


def test_rows_stream_from_the_tfds_dataset_by_name(tfds_dir):
    config = tfds_config(tfds_dir)
    pipeline = causal_lm.CausalLMPipeline(config)
    data = pipeline.prepare()
    batch = next(pipeline.train_iterator(data, 0, 1))
    text = CORPUS.read_text(encoding="utf-8")
    # Rows are the dataset's paragraphs, tokenized and packed: every stretch between two document
    # boundaries decodes to text of the corpus (paragraphs, so no blank line inside one).
    eos = data.tokenizer.eos_id
    checked = 0
    for row in batch["inputs"]:
        pieces = np.split(row, np.flatnonzero(row == eos))
        for piece in pieces[1:-1]:  # whole documents only: the row's first and last may be cut
            document = data.tokenizer.decode([int(t) for t in piece if t != eos])
            if len(document) > 20:
                assert document.strip() in text and "\n\n" not in document.strip(), document
                checked += 1
    assert checked > 0
    assert batch["inputs"].shape == (config.train.batch_size, config.data.seq_len)


def test_a_model_trains_from_a_tfds_dataset_streamed_by_name(tfds_dir, tmp_path):
    config = tfds_config(tfds_dir, **{"train.steps": 30, "eval.every_steps": 30, "checkpoint.every_steps": 30,
                                      "train.log_every_steps": 10, "optimizer.learning_rate": 3e-3})
    final = trainer.train(config, str(tmp_path / "run"))
    from lm import metrics as metrics_lib

    losses = [r["train/loss"] for r in metrics_lib.read_records(str(tmp_path / "run")) if "train/loss" in r]
    assert losses[-1] < losses[0] - 0.5, losses  # it learns from the streamed documents
    assert np.isfinite(final["eval/loss"])


def test_an_unprepared_tfds_name_says_how_to_prepare_it(tmp_path):
    config = small_config(**{"data.streaming": True, "data.tfds_name": "lm_stream_test_text",
                             "data.tfds_data_dir": str(tmp_path / "empty")})
    with pytest.raises(config_lib.ConfigError, match="tools/prepare_data.py --tfds_name=lm_stream_test_text"):
        causal_lm.CausalLMPipeline(config).prepare()
