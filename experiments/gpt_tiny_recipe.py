"""Which gpt_tiny recipe reaches the lowest validation bits per byte on tiny-shakespeare
within a fixed wall-clock budget on a 2-core CPU?

The question behind configs/gpt_tiny.py's defaults. Each point is a set of config overrides
on top of the base; run one with

  python tools/train.py --config=configs/gpt_tiny.py --workdir=runs/recipe/<name> <overrides as --config.k=v>

Findings (2026-11-22, this repo's first recipe sweep, bits per byte on the validation split):
at equal tokens seen, batch 8 beat batch 16 clearly (2.72 vs 2.81 after 1.1M tokens);
a peak learning rate of 6e-3 at batch 16 diverged early (3.05) where 4e-3 trained.
"""

from configs import gpt_tiny

BASE = {"model.embed_dim": 128, "model.mlp_dim": 512, "optimizer.warmup_steps": 20}
AXES = {
    "b16_lr4e-3": {"train.batch_size": 16, "train.steps": 270, "optimizer.learning_rate": 4e-3},
    "b16_lr6e-3": {"train.batch_size": 16, "train.steps": 270, "optimizer.learning_rate": 6e-3},
    "b8_lr3e-3": {"train.batch_size": 8, "train.steps": 540, "optimizer.learning_rate": 3e-3},
    "b16_len64_lr3e-3": {"train.batch_size": 16, "data.seq_len": 64, "train.steps": 450,
                         "optimizer.learning_rate": 3e-3},
}


def get_config():
    return gpt_tiny.get_config()


def points() -> dict[str, dict]:
    """name -> config overrides (dotted keys) for every run of this experiment."""
    return {name: {**BASE, **overrides} for name, overrides in AXES.items()}
