"""gpt2_small: GPT-2's 124M shapes (12 layers, width 768, 12 heads, 1024 context, 50257 vocab).

Too large to train usefully on a CPU; here for planning, benchmarks and weight interop.

Planned on 8 x a100 (one node; tools/plan.py, docs/scale.md): data parallel over the 8 GPUs,
256 x 1024 tokens per step (32 rows per GPU), one microbatch, remat save_dots, float32 (TF32
matmuls; einsum attention, cuDNN's flash attention takes only bfloat16): peak 64.5 GiB of 67.1
usable per GPU, 503,645 tokens/s, MFU 34.5% of the TF32 peak. 512 rows per step (GPT-2's) do
not fit in one microbatch, and microbatching costs too much memory today (docs/scale.md).
"""
from configs import base

PLANNED_ON = {"hardware": "a100", "devices": 8}


def get_config():
    config = base.get_config()
    m = config.model
    m.vocab_size = 50257
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 12, 768, 12, 3072
    m.max_len = 1024
    m.positions, m.norm, m.mlp_activation = "learned", "layernorm", "gelu"
    m.use_bias, m.tie_embeddings = True, True
    config.data.seq_len = 1024
    config.train.batch_size = 256
    m.remat = "save_dots"
    config.optimizer.learning_rate = 6e-4
    return config
