"""distill_sst2: a smaller BERT classifier (2 x 128) taught by a fine-tuned bert_tiny on SST-2.

Fine-tune the teacher first (configs/finetune_sst2.py, from a bert_tiny pretraining run), then
train the student with the teacher's tokenizer; the same command with
--config.distill.teacher_workdir= is the no-teacher baseline:

  python tools/train.py --config=configs/finetune_sst2.py --config.init_from=runs/bert_tiny --workdir=runs/sst2
  python tools/train.py --config=configs/distill_sst2.py --workdir=runs/sst2_student \
      --config.tokenizer.path=runs/sst2/tokenizer.model

(the student must use the teacher's vocabulary; without that override the run stops before
compiling and names this fix).
"""
from configs import finetune_sst2


def get_config():
    config = finetune_sst2.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 2, 128, 4, 256
    config.distill.teacher_workdir = "runs/sst2"
    config.distill.temperature = 2.0
    config.distill.alpha = 0.5
    return config
