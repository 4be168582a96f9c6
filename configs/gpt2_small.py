"""gpt2_small: GPT-2's 124M shapes (12 layers, width 768, 12 heads, 1024 context, 50257 vocab).

Too large to train usefully on a CPU; here for planning, benchmarks and weight interop.
"""
from configs import base


def get_config():
    config = base.get_config()
    m = config.model
    m.vocab_size = 50257
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 12, 768, 12, 3072
    m.max_len = 1024
    m.positions, m.norm, m.mlp_activation = "learned", "layernorm", "gelu"
    m.use_bias, m.tie_embeddings = True, True
    config.data.seq_len = 1024
    config.train.batch_size = 512
    config.optimizer.learning_rate = 6e-4
    return config
