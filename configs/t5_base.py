"""t5_base: T5.1.0 base's shapes (12 + 12 layers, width 768, 12 heads of 64, ReLU MLP 3072,
RMSNorm, no biases, bucketed relative position bias, tied 32,128 vocabulary): 222,903,552
parameters, as the original release counts them."""
from configs import t5_small


def get_config():
    config = t5_small.get_config()
    m = config.model
    m.num_layers, m.num_decoder_layers, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 12, 12, 768, 12, 64, 3072
    return config
