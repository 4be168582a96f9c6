"""Task-adaptive pretraining (mlm.corpus=finetune_task): a pretrained BERT continues its masked
LM on a fine-tuning task's own training inputs, with its own tokenizer."""

import dataclasses
import os

import pytest

from lm import assembly, init_from, trainer
from lm.data import glue
from lm.tasks import mlm_nsp

from bert_setup import SST2_SAMPLE, bert_config

pytestmark = pytest.mark.bert


def tapt_config(init_from_dir, **overrides):
    values = {"mlm.corpus": "finetune_task", "finetune.data_dir": str(SST2_SAMPLE), "mlm.nsp_weight": 0.0,
              "data.train_files": "", "data.validation_fraction": 0.2, "tokenizer.path": "",
              "train.steps": 40, "eval.every_steps": 40, "checkpoint.every_steps": 40, "eval.max_batches": 0}
    values.update(overrides)
    return dataclasses.replace(bert_config(**values), init_from=init_from_dir)


def test_task_text_is_the_training_inputs_grouped_and_never_the_validation_split():
    config = tapt_config("")
    text = mlm_nsp.task_text(config)
    documents = [block.split("\n") for block in text.strip("\n").split("\n\n")]
    train = glue.load(config.finetune, "train")
    validation = glue.load(config.finetune, "validation")
    n = mlm_nsp.TASK_SENTENCES_PER_DOCUMENT
    assert len(documents) == -(-len(train.first) // n) and all(len(d) == n for d in documents[:-1])
    assert [s for d in documents for s in d] == train.first
    unseen = set(validation.first) - set(train.first)
    assert unseen and not unseen & set(text.split("\n"))


@pytest.mark.slow  # 25-40 s on 2 cores: the default suite stays under 15 minutes
def test_continued_pretraining_keeps_the_source_tokenizer_and_learns_the_task_text(tmp_path):
    source = str(tmp_path / "pretrain")
    trainer.train(bert_config(), source)
    config = tapt_config(source)
    # Before: the source model's masked-LM loss on the held-out task sentences.
    source_tokenizer = dataclasses.replace(config.tokenizer, path=os.path.join(source, "tokenizer.model"))
    run = assembly.build(dataclasses.replace(config, tokenizer=source_tokenizer))
    state = init_from.restore(run.init_fn(), config, None, log=lambda message: None)
    before = assembly.evaluate(run, state.params)["eval/mlm_loss"]

    workdir = str(tmp_path / "tapt")
    after = trainer.train(config, workdir)["eval/mlm_loss"]
    with open(os.path.join(workdir, "tokenizer.model"), "rb") as ours, \
            open(os.path.join(source, "tokenizer.model"), "rb") as theirs:
        assert ours.read() == theirs.read(), "init_from without tokenizer.path takes the source's tokenizer"

    # Control: the same continuation on the source's own text. It is the task text that helps.
    control = str(tmp_path / "control")
    trainer.train(dataclasses.replace(bert_config(**{"train.steps": 40, "eval.every_steps": 40,
                                                     "checkpoint.every_steps": 40}), init_from=source), control)
    control_params = init_from.read_params(init_from.source(control, "latest"), log=lambda message: None)
    on_task = assembly.evaluate(run, control_params)["eval/mlm_loss"]
    assert after < before - 0.15 and after < on_task - 0.1, (before, after, on_task)
