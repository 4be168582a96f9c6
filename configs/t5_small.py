"""t5_small: T5.1.0 small's shapes (6 + 6 layers, width 512, 8 heads of 64, ReLU MLP 2048,
RMSNorm, no biases, bucketed relative position bias, tied 32,128 vocabulary): 60,506,624
parameters, as the original release counts them."""
from configs import t5_tiny


def get_config():
    config = t5_tiny.get_config()
    m = config.model
    m.vocab_size = 32128
    m.num_layers, m.num_decoder_layers, m.embed_dim, m.num_heads, m.head_dim, m.mlp_dim = 6, 6, 512, 8, 64, 2048
    m.relative_buckets, m.relative_max_distance = 32, 128
    config.seq2seq.input_len, config.seq2seq.target_len = 512, 114
    config.data.seq_len = 512
    config.train.batch_size = 128
    config.optimizer.learning_rate = 1e-2
    config.optimizer.schedule, config.optimizer.warmup_steps = "rsqrt", 10000
    return config
