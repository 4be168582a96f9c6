"""Fine-tune gpt_tiny on SST-2 (sentiment, 2 classes): the decoder's last real token, classified.

python tools/train.py --config=configs/finetune_sst2_gpt.py --workdir=runs/sst2_gpt [--config.init_from=runs/gpt_tiny]

The same data, splits and selection as configs/finetune_sst2.py (BERT): SST-2 from
the data folder (`LM_DATA_DIR` or data.data_dir; docs/data.md), the best checkpoint by
validation accuracy, evaluated again into <workdir>/eval_report.json. init_from takes all of a
causal-LM run's params (and its tokenizer); the classifier head starts fresh. Without it the
decoder trains from scratch with a tokenizer trained on the SST-2 training sentences.
"""
from configs import finetune_sst2, gpt_tiny


def get_config():
    config = gpt_tiny.get_config()  # the decoder's shapes must be the pretraining run's for init_from
    config.train.objective = "classification"
    config.model.num_classes = 2
    config.model.pooling = "last"  # the one position that has read the whole sentence
    config.model.dropout_rate = 0.1
    return finetune_sst2.sst2_recipe(config)
