"""What the BERT tests share: small pretraining and fine-tuning configs, and a workdir's metrics.
The pretrained workdir itself is conftest's session fixture `bert_pretrained_workdir`."""

import json
import os

from lm import config as config_lib

from conftest import CORPUS, REPO

SST2_SAMPLE = REPO / "data" / "sst2_sample"
SPECIALS = "[CLS],[SEP],[MASK]"


def bert_config(**overrides):
    """A tiny BERT pretraining config on tiny-shakespeare paragraphs (documents = speeches)."""
    from configs import bert_tiny

    config = bert_tiny.get_config()
    values = {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 4, "model.mlp_dim": 128,
        "model.max_len": 64, "model.dropout_rate": 0.0, "data.seq_len": 64, "data.train_files": str(CORPUS),
        "data.validation_files": "", "data.validation_fraction": 0.1, "mlm.document_boundary": "paragraph",
        "mlm.max_predictions": 10, "tokenizer.vocab_size": 512, "train.batch_size": 16, "train.steps": 30,
        "train.log_every_steps": 5, "eval.every_steps": 30, "eval.batch_size": 16, "eval.max_batches": 2,
        "checkpoint.every_steps": 30, "checkpoint.async_save": False, "optimizer.warmup_steps": 5,
        "optimizer.learning_rate": 3e-3,
    }
    return config_lib.from_config_dict(config, {**values, **overrides})


def finetune_config(init_from="", **overrides):
    from configs import finetune_sst2

    config = finetune_sst2.get_config()
    values = {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 4, "model.mlp_dim": 128,
        "model.max_len": 64, "data.seq_len": 32, "finetune.data_dir": str(SST2_SAMPLE), "train.batch_size": 16,
        "train.steps": 20, "train.log_every_steps": 5, "eval.every_steps": 10, "eval.batch_size": 40,
        "checkpoint.every_steps": 10, "checkpoint.async_save": False, "optimizer.warmup_steps": 2,
        "tokenizer.vocab_size": 512,
    }
    return config_lib.from_config_dict(config, {**values, **overrides, "init_from": init_from})


def metrics_of(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
