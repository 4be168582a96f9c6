"""llama_1b: Llama-3.2-1B's shapes (16 layers, width 2048, 32 heads with 8 KV heads,
SwiGLU 8192, RMSNorm, rotary, tied 128256 vocab): 1,235,814,400 parameters.

Planned on 8 x h100 (one node; tools/plan.py, docs/scale.md): FSDP over the 8 GPUs, 64 x 2048
tokens per step, one microbatch, remat save_dots, cuDNN flash attention, and the output head
fused with the loss 256 positions at a time (train.loss_chunk: the [batch, length, 128256]
logits are never formed): peak 10.99 GiB of 67.1 usable per GPU, 425,962 tokens/s, MFU 44.3%.
With whole logits the same plan peaks at 25.10 GiB; data parallel at 41.46 GiB, 413,808 tokens/s.
"""
from configs import base

PLANNED_ON = {"hardware": "h100", "devices": 8}


def get_config():
    config = base.get_config()
    m = config.model
    m.vocab_size = 128256
    m.num_layers, m.embed_dim, m.num_heads, m.num_kv_heads, m.mlp_dim = 16, 2048, 32, 8, 8192
    m.max_len = 8192
    m.positions, m.rope_theta, m.norm, m.norm_eps = "rotary", 500000.0, "rmsnorm", 1e-5
    m.mlp_activation, m.use_bias, m.tie_embeddings = "swiglu", False, True
    m.param_dtype, m.dtype = "float32", "bfloat16"
    m.scan_layers, m.remat = True, "save_dots"
    config.data.seq_len = 2048
    config.train.batch_size = 64
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 2000
    config.train.loss_chunk = 256
    config.mesh.data, config.mesh.fsdp = 1, -1
    return config
