"""bert_tiny: a CPU-sized BERT pretrained with masked-LM and next-sentence prediction on WikiText-2.

python tools/train.py --config=configs/bert_tiny.py --workdir=runs/bert_tiny

WikiText-2's train split is not in ../shared/data, so this trains on its test split and
validates on its validation split; article titles (` = Title = ` lines) bound the documents.
Fine-tune the result with configs/finetune_sst2.py --config.init_from=runs/bert_tiny.
"""
from configs import base

WIKITEXT = "../shared/data/wikitext-2"


def get_config():
    config = base.get_config()
    m = config.model
    m.family = "bert"
    m.num_layers, m.embed_dim, m.num_heads, m.mlp_dim = 4, 128, 4, 512
    m.max_len = 128
    m.dropout_rate = 0.1
    config.train.objective = "mlm_nsp"
    config.data.train_files = f"{WIKITEXT}/test.txt"
    config.data.validation_files = f"{WIKITEXT}/valid.txt"
    # Pairs of 64 pieces: twice the pairs per CPU second of 128, and SST-2 fine-tunes at 64 anyway.
    config.data.seq_len = 64
    # Uncased, as BERT-uncased: one spelling per word, and SST-2's text (lowercased) meets the same pieces.
    config.data.lowercase = True
    config.tokenizer.vocab_size = 4096
    config.tokenizer.special_symbols = "[CLS],[SEP],[MASK]"
    config.mlm.max_predictions = 10  # 15% of 61
    config.train.steps = 2000
    config.train.batch_size = 32
    config.train.log_every_steps = 50
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.b2 = 0.98
    config.optimizer.weight_decay = 0.01
    config.eval.every_steps = 250
    config.eval.batch_size = 64
    config.eval.max_batches = 16  # 1,024 fixed validation pairs
    config.checkpoint.every_steps = 250
    return config
