"""bert_tiny: a CPU-sized BERT pretrained with masked-LM and next-sentence prediction on WikiText-2.

python tools/train.py --config=configs/bert_tiny.py --workdir=runs/bert_tiny

WikiText-2's train split is not in the CI data folder, so this trains on its test split and
validates on its validation split; article titles (` = Title = ` lines) bound the documents.
Fine-tune the result with configs/finetune_sst2.py --config.init_from=runs/bert_tiny.
"""
from configs import base

WIKITEXT = "wikitext-2"  # in the data directory: $LM_DATA_DIR or --config.data.data_dir (docs/data.md)


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
    # Pairs of 128 pieces (BERT's length for 90% of its steps): A and B are a few sentences each,
    # enough shared topic words for next-sentence prediction (a TF-IDF cosine of A and B separates
    # the labels with ROC AUC 0.89 at 128 pieces, 0.77 at 64), and MRPC's 128-piece inputs meet
    # trained positions.
    config.data.seq_len = 128
    # Uncased, as BERT-uncased: one spelling per word, and SST-2's text (lowercased) meets the same pieces.
    config.data.lowercase = True
    config.tokenizer.vocab_size = 4096
    config.tokenizer.special_symbols = "[CLS],[SEP],[MASK]"
    config.mlm.max_predictions = 20  # 15% of 125
    # 4,000 steps: NSP sits at chance until MLM has plateaued and the LR has decayed to ~5e-4 (at
    # 2,000 steps it only began to rise at step 1,400); twice the steps give it a long low-LR tail.
    # A lower peak (1e-3) did not free NSP earlier and slowed MLM (docs/bert.md).
    config.train.steps = 4000
    config.train.batch_size = 32
    config.train.log_every_steps = 50
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.b2 = 0.98
    config.optimizer.weight_decay = 0.01
    config.eval.every_steps = 200
    config.eval.batch_size = 64
    config.eval.max_batches = 16  # 1,024 fixed validation pairs
    config.checkpoint.every_steps = 250
    return config
