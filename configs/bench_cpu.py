"""bench_cpu: the performance issue's reference shapes for this CPU (tools/bench.py).

Width 512, 8 layers, 8 heads, MLP 2048, sequence 256, batch 16, vocabulary 8192, learned
positions, tied embeddings, no dropout, AdamW, float32: large enough that matmuls dominate,
small enough to step in seconds on 2 cores. Trainable too (on tiny-shakespeare with an
8192-piece tokenizer), though it exists to be measured.

python tools/bench.py --config=configs/bench_cpu.py --peer=hf --json=bench.json
"""
from configs import base


def get_config():
    config = base.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 8, 512, 8, 2048
    m.vocab_size = 8192
    m.max_len = 256
    m.positions, m.tie_embeddings, m.dropout_rate = "learned", True, 0.0
    m.dtype = m.param_dtype = "float32"
    config.tokenizer.vocab_size = 8192
    config.data.seq_len = 256
    config.train.batch_size = 16
    config.optimizer.name = "adamw"
    return config
