"""Fine-tune bert_tiny on SST-2 (single-sentence sentiment, 2 classes).

python tools/train.py --config=configs/finetune_sst2.py --config.init_from=runs/bert_tiny --workdir=runs/sst2

`init_from` (a pretraining workdir or one of its checkpoints) gives the encoder and the
tokenizer; the classifier head starts fresh. Empty `init_from` trains the same model from
scratch (give it the pretraining tokenizer with --config.tokenizer.path=runs/bert_tiny/tokenizer.model
for a like-for-like comparison). The best checkpoint by validation accuracy is evaluated
again at the end into <workdir>/eval_report.json.
"""
from configs import bert_tiny


def get_config():
    config = bert_tiny.get_config()  # the encoder's shapes (and data.lowercase) must be the pretraining run's
    config.model.num_classes = 2
    config.model.dropout_rate = 0.1
    # Mean pooling: chosen when bert_tiny's NSP stayed at chance (its [CLS] vector had no sentence-level
    # training), and still ahead of [CLS] on the 4,000-step checkpoint whose NSP learned: 0.757 vs 0.740
    # pretrained, 0.758 vs 0.744 from scratch (seed 0, docs/bert.md).
    config.model.pooling = "mean"
    return sst2_recipe(config)


def sst2_recipe(config):
    """SST-2's data, schedule, evaluation and selection, the same for every family's classifier
    (configs/finetune_sst2_gpt.py takes it too)."""
    config.train.objective = "classification"
    config.finetune.task = "sst2"
    config.finetune.select_metric = "accuracy"
    config.data.seq_len = 64
    config.train.batch_size = 32
    config.train.steps = 600  # ~2.8 epochs of 6,920 sentences
    config.eval.max_batches = 0  # the whole validation split (872 sentences)
    return finetune_schedule(config)


def finetune_schedule(config):
    """The fine-tuning schedule every labelled-data config shares (finetune_wnut17 too): early
    stopping, a linear decay after warm-up, light weight decay, evaluation and keeping the best."""
    config.train.early_stopping_patience = 4
    config.train.log_every_steps = 50
    # Best of {1e-4, 3e-4, 1e-3, 2e-3} for the pretrained encoder (and of {3e-4, 1e-3, 2e-3} from scratch) at
    # seed 0: a lower rate does not protect what pretraining learned here, it only learns slower (docs/bert.md).
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 60
    config.optimizer.schedule = "linear"
    config.optimizer.end_learning_rate_fraction = 0.0
    config.optimizer.weight_decay = 0.01
    config.eval.every_steps = 100
    config.eval.batch_size = 64
    config.checkpoint.every_steps = 100
    config.checkpoint.keep = 1
    return config
