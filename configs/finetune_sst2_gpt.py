"""Fine-tune gpt_tiny on SST-2 (sentiment, 2 classes): the decoder's last real token, classified.

python tools/train.py --config=configs/finetune_sst2_gpt.py --workdir=runs/sst2_gpt [--config.init_from=runs/gpt_tiny]

The same data, splits and selection as configs/finetune_sst2.py (BERT): SST-2 from
finetune.data_dir (empty: ../shared/data/sst2 beside the repository), the best checkpoint by
validation accuracy, evaluated again into <workdir>/eval_report.json. init_from takes all of a
causal-LM run's params (and its tokenizer); the classifier head starts fresh. Without it the
decoder trains from scratch with a tokenizer trained on the SST-2 training sentences.
"""
from configs import gpt_tiny


def get_config():
    config = gpt_tiny.get_config()  # the decoder's shapes must be the pretraining run's for init_from
    config.train.objective = "classification"
    config.model.num_classes = 2
    config.model.pooling = "last"  # the one position that has read the whole sentence
    config.model.dropout_rate = 0.1
    config.finetune.task = "sst2"
    config.finetune.select_metric = "accuracy"
    config.data.seq_len = 64
    config.train.batch_size = 32
    config.train.steps = 600  # ~2.8 epochs of 6,920 sentences
    config.train.early_stopping_patience = 4
    config.train.log_every_steps = 50
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 60
    config.optimizer.schedule = "linear"
    config.optimizer.end_learning_rate_fraction = 0.0
    config.optimizer.weight_decay = 0.01
    config.eval.every_steps = 100
    config.eval.batch_size = 64
    config.eval.max_batches = 0  # the whole validation split (872 sentences)
    config.checkpoint.every_steps = 100
    config.checkpoint.keep = 1
    return config
