"""gpt_tiny: the CPU default. A small GPT on tiny-shakespeare that trains in about five
minutes on a 2-core laptop CPU to under 2.5 validation bits per byte.

python tools/train.py --config=configs/gpt_tiny.py --workdir=runs/gpt_tiny

The recipe (width 128, batch 8, peak learning rate 3e-3) came from the sweep in
experiments/gpt_tiny_recipe.py: on this CPU, small batches won at equal tokens.
"""
from configs import base


def get_config():
    config = base.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 4, 128, 4, 512
    m.max_len = 128
    config.data.seq_len = 128
    config.tokenizer.vocab_size = 1024
    config.train.steps = 1600
    config.train.batch_size = 8
    config.train.log_every_steps = 50
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 50
    config.eval.every_steps = 100  # evaluation is ~1 s here; a finer grid shows when a target is first met
    config.eval.batch_size = 32  # fewer, larger evaluation batches: same sums, less dispatch overhead
    config.checkpoint.every_steps = 200
    return config
