"""t5_tiny_multi30k: t5_tiny pretrained by span corruption on WikiText-2 plus Multi30k's monolingual training text.

python tools/train.py --config=configs/t5_tiny_multi30k.py --workdir=runs/t5_wiki_multi30k
python tools/train.py --config=configs/finetune_multi30k.py --workdir=runs/multi30k \
    --config.init_from=runs/t5_wiki_multi30k

The pretraining half of the Multi30k experiment (docs/t5.md, "Measured"). The corpus is
WikiText-2 (the CI data folder has no train.txt, so test.txt) and both sides of Multi30k's 29,000
training pairs read as unpaired text, one file per language: in-domain monolingual
pretraining, a standard recipe for low-resource translation. Only training files are read;
validation and test pairs never are. Validation is WikiText-2 valid.txt.

Why the German text: on WikiText alone German pieces are never targets, so their tied
embedding rows are trained only as negatives and drift (docs/t5.md), and the decoder learns
no German. The tokenizer (4,096 pieces, trained on this same corpus) covers both languages.
"""
from configs import t5_tiny

WIKITEXT = "wikitext-2"  # in the data directory: $LM_DATA_DIR or --config.data.data_dir (docs/data.md)
MULTI30K = "multi30k"  # in the data directory (docs/data.md)


def get_config():
    config = t5_tiny.get_config()
    config.data.train_files = f"{WIKITEXT}/test.txt,{MULTI30K}/train.en.gz,{MULTI30K}/train.de.gz"
    config.data.validation_files = f"{WIKITEXT}/valid.txt"
    config.tokenizer.vocab_size = 4096
    config.eval.max_batches = 20
    # 1.0, not 0.1: the same pretraining loss with weights no larger than a from-scratch model's
    # (norm 81 against 104), which fine-tune better (docs/t5.md, Measured).
    config.optimizer.weight_decay = 1.0
    return config
