"""Fine-tune bert_tiny on MRPC (sentence-pair paraphrase, 2 classes; F1 of the paraphrase class).

python tools/train.py --config=configs/finetune_mrpc.py --config.init_from=runs/bert_tiny --workdir=runs/mrpc

The local copy has MSR's train and test files: the test split (1,725 pairs) is the validation
split here. finetune.task=rte (configs are the same otherwise) trains on RTE.
"""
from configs import finetune_sst2


def get_config():
    config = finetune_sst2.get_config()
    config.finetune.task = "mrpc"
    config.finetune.select_metric = "f1"
    config.data.seq_len = 128
    config.train.steps = 500  # ~4 epochs of 4,076 pairs
    return config
