"""Task-adaptive pretraining: continue a pretrained bert_tiny's masked LM on SST-2's own
unlabelled training sentences, then fine-tune from the result.

python tools/train.py --config=configs/tapt_sst2.py --config.init_from=runs/bert_tiny --workdir=runs/bert_tiny_sst2
python tools/train.py --config=configs/finetune_sst2.py --config.init_from=runs/bert_tiny_sst2 --workdir=runs/sst2_tapt

As in Gururangan et al. (2020, "Don't Stop Pretraining"): bert_tiny learned its pieces and
their contexts from WikiText-2, where film-review language is rare; a short MLM continuation on
the 6,920 training sentences (labels dropped; validation sentences never read) adapts it to
the text it is about to classify. The tokenizer and every parameter come from init_from.
"""
from configs import bert_tiny


def get_config():
    config = bert_tiny.get_config()
    config.mlm.corpus = "finetune_task"
    config.finetune.task = "sst2"
    # Consecutive SST-2 sentences come from different reviews: there is no next-sentence signal,
    # so only the masked LM trains (the NSP head is carried along untouched by the loss).
    config.mlm.nsp_weight = 0.0
    config.data.train_files = ""
    # Validation: the last 10% of the task's training sentences (grouped), held out of the MLM.
    config.data.validation_files = ""
    config.data.validation_fraction = 0.1
    config.train.steps = 800  # ~19 passes over the sentences, each masked afresh
    config.optimizer.learning_rate = 5e-4  # the pretraining's LR at the end of its fast phase
    config.optimizer.warmup_steps = 50
    config.eval.every_steps = 200
    config.eval.max_batches = 0  # all held-out pairs
    config.checkpoint.every_steps = 200
    return config
