"""gpt_tiny: the CPU default. A small GPT on tiny-shakespeare, minutes on a laptop.

python tools/train.py --config=configs/gpt_tiny.py --workdir=/tmp/gpt_tiny
"""
from configs import base


def get_config():
    config = base.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 4, 256, 4, 1024
    m.max_len = 128
    config.data.seq_len = 128
    config.tokenizer.vocab_size = 1024
    config.train.steps = 1200
    config.train.batch_size = 32
    config.train.log_every_steps = 50
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 100
    config.eval.every_steps = 200
    config.checkpoint.every_steps = 200
    return config
