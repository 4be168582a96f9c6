"""BERT-base's shapes: 12 layers, width 768, 12 heads, MLP 3072, 512 positions, 2 token types,
a 30,522-piece vocabulary; about 110M parameters (tests/test_bert.py counts them).

Pre-norm blocks (as every family here) instead of the original post-norm. Sized for an
accelerator, not this CPU: set data.train_files to a large document-structured corpus.

Planned on 8 x tpu-v5e (tools/plan.py, docs/scale.md): data parallel over the 8 chips, 256 x 128
tokens per step (BERT's phase 1), float32, no remat: peak 7.5 GiB of 14.4 usable per chip,
735,597 tokens/s, MFU 25.5% (float32 and width 768: narrow matmuls, elementwise-heavy).
"""
from configs import bert_tiny

PLANNED_ON = {"hardware": "tpu-v5e", "devices": 8}


def get_config():
    config = bert_tiny.get_config()
    m = config.model
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 12, 768, 12, 3072
    m.max_len = 512
    m.vocab_size = 30522
    config.tokenizer.vocab_size = 30522
    config.data.seq_len = 128  # BERT's phase 1; phase 2 uses 512
    config.mlm.max_predictions = 20
    config.train.batch_size = 256
    config.train.steps = 1_000_000
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 10_000
    config.optimizer.schedule = "linear"
    config.optimizer.end_learning_rate_fraction = 0.0
    return config
