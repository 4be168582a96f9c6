"""bert_tiny in the original BERT's shape, so the result exports to Hugging Face transformers.

python tools/train.py --config=configs/bert_tiny_postnorm.py --workdir=runs/bert_tiny_postnorm
python tools/convert.py --to_hf=runs/bert_tiny_postnorm_hf --workdir=runs/bert_tiny_postnorm

Post-norm blocks, a LayerNorm over the embeddings, exact GELU and LayerNorm eps 1e-12, as
BertForPreTraining (docs/interop.md). Everything else, the optimizer included, is bert_tiny's.
"""
from configs import bert_tiny


def get_config():
    config = bert_tiny.get_config()
    m = config.model
    m.norm_position, m.embedding_norm, m.mlp_activation, m.norm_eps = "post", True, "gelu_exact", 1e-12
    return config
