"""llama_7b: Llama-2-7B's shapes (32 layers, width 4096, 32 heads, SwiGLU 11008, RMSNorm,
rotary, untied 32000 vocab): 6,738,415,616 parameters.

Planned on 8 x h100 (one node; tools/plan.py, docs/scale.md): FSDP over the 8 GPUs, 32 x 4096
tokens per step (4 rows per GPU, as MaxText's published run), one microbatch, remat save_dots,
cuDNN flash attention: peak 56.8 GiB of 67.1 usable per GPU, 86,967 tokens/s, MFU 50.7%
(MaxText publishes 49.7% for Llama-2-7B on 8 x H100). For a larger batch use more nodes;
gradient accumulation currently costs far more memory than it should (docs/scale.md).
"""
from configs import base

PLANNED_ON = {"hardware": "h100", "devices": 8}


def get_config():
    config = base.get_config()
    m = config.model
    m.vocab_size = 32000
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 32, 4096, 32, 11008
    m.max_len = 4096
    m.positions, m.norm, m.norm_eps = "rotary", "rmsnorm", 1e-5
    m.mlp_activation, m.use_bias, m.tie_embeddings = "swiglu", False, False
    m.param_dtype, m.dtype = "float32", "bfloat16"
    m.scan_layers, m.remat = True, "save_dots"
    config.data.seq_len = 4096
    config.train.batch_size = 32
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 2000
    config.mesh.data, config.mesh.fsdp = 1, -1
    return config
