"""How much do the peak learning rate and the warm-up length matter for a short gpt_tiny run?

gpt_tiny on tiny-shakespeare for 300 steps (about 300k tokens, batch 8 x 128), peak learning
rate 1e-3 / 3e-3 / 1e-2 crossed with 10 or 100 warm-up steps (then cosine decay to 10%).
The question: is configs/gpt_tiny.py's 3e-3 with a short warm-up still the best choice when
the budget is short, and does a long warm-up rescue a learning rate that is too high?

  python tools/sweep.py experiments/lr_warmup_gpt_tiny.py --workdir=runs/lr_warmup
  python tools/sweep.py experiments/lr_warmup_gpt_tiny.py --workdir=runs/lr_warmup --print-commands

Findings (2026-11-29, one seed, docs/experiments.md has the table and plot): the 100-step
warm-up won at every learning rate, most at 1e-2 (3.10 -> 2.80 validation bits per byte);
3e-3 with 100 warm-up steps was best (2.77); with 10 warm-up steps 3e-3 was no better than 1e-3.
"""
from configs import gpt_tiny
from lm import sweep

AXES = {"optimizer.learning_rate": [1e-3, 3e-3, 1e-2], "optimizer.warmup_steps": [10, 100]}
SEEDS = (0,)


def get_config():
    config = gpt_tiny.get_config()
    config.train.steps = 300
    config.eval.every_steps = 50
    config.checkpoint.every_steps = 100
    config.train.sample_tokens = 60
    return config


def points() -> dict[str, dict]:
    return sweep.grid(AXES, seeds=SEEDS)
