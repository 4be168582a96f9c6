"""t5_base: T5.1.0 base's shapes (12 + 12 layers, width 768, 12 heads of 64, ReLU MLP 3072,
RMSNorm, no biases, bucketed relative position bias, tied 32,128 vocabulary): 222,903,552
parameters, as the original release counts them.

Planned on 8 x tpu-v4 (tools/plan.py, docs/scale.md): data parallel over the 8 chips, 128 rows
of 512 input + 114 target tokens per step, float32, no remat: peak 14.6 GiB of 28.8 usable per
chip, 623,396 tokens/s (input and target tokens), MFU 19.3% (float32, width 768, the float32
softmax over 512 x 512 scores: elementwise-bound).
"""
from configs import t5_small

PLANNED_ON = {"hardware": "tpu-v4", "devices": 8}


def get_config():
    config = t5_small.get_config()
    m = config.model
    m.num_layers, m.num_decoder_layers, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 12, 12, 768, 12, 64, 3072
    return config
