"""distill_gpt_tiny: a gpt_tiny student (4 x 128) taught by a bigger GPT (6 x 256) on tiny-shakespeare.

Train the teacher first (same corpus and vocabulary size, so the same cached tokenizer), then
the student; the same command with --config.distill.teacher_workdir= is the no-teacher baseline:

  python tools/train.py --config=configs/gpt_tiny.py --workdir=runs/distill_teacher \
      --config.model.embed_dim=256 --config.model.num_layers=6 --config.model.mlp_dim=1024 \
      --config.train.steps=600 --config.optimizer.learning_rate=2e-3
  python tools/train.py --config=configs/distill_gpt_tiny.py --workdir=runs/distill_student
  python tools/train.py --config=configs/distill_gpt_tiny.py --workdir=runs/distill_baseline \
      --config.distill.teacher_workdir=

Figures: README, "Generation, distillation and int8".
"""
from configs import gpt_tiny


def get_config():
    config = gpt_tiny.get_config()
    config.train.steps = 400
    config.eval.every_steps = 100
    config.checkpoint.every_steps = 200
    d = config.distill
    d.teacher_workdir = "runs/distill_teacher"
    d.temperature = 2.0
    d.alpha = 0.5
    return config
