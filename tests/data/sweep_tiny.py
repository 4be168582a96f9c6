"""A two-point sweep small enough for a test: a tiny GPT, 6 steps per point."""
from configs import gpt_tiny
from lm import sweep


def get_config():
    config = gpt_tiny.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim, m.max_len = 1, 32, 2, 64, 32
    config.data.seq_len = 32
    config.tokenizer.vocab_size = 512
    config.train.batch_size = 4
    config.train.steps = 6
    config.train.log_every_steps = 2
    config.train.sample_tokens = 4
    config.eval.every_steps = 3
    config.eval.max_batches = 1
    config.checkpoint.every_steps = 2
    config.checkpoint.async_save = False
    config.optimizer.warmup_steps = 2
    return config


def points():
    return sweep.grid({"optimizer.learning_rate": [1e-3, 3e-3]})
