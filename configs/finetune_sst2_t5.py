"""Fine-tune t5_tiny's encoder on SST-2 (sentiment, 2 classes): mean-pooled encoder states, classified.

python tools/train.py --config=configs/finetune_sst2_t5.py --workdir=runs/sst2_t5 [--config.init_from=runs/t5_tiny]

The same data, splits and selection as configs/finetune_sst2.py (BERT) and finetune_sst2_gpt.py.
The classifier is T5's encoder alone (lm/models/t5.py): no decoder is built or computed, and
init_from takes a T5 pretraining run's token embeddings, encoder, encoder norm and position
bias (and its tokenizer), leaving its decoder behind; the head starts fresh.

The other way T5 classifies, label words decoded (text-to-text, "positive"/"negative" as
targets), is the seq2seq objective on JSON lines: docs/finetune.md shows it.
"""
from configs import finetune_sst2, t5_tiny


def get_config():
    config = t5_tiny.get_config()  # the encoder's shapes and tokenizer must be the pretraining run's for init_from
    config.train.objective = "classification"
    config.model.num_classes = 2
    # Mean over the real tokens: span-corruption pretraining gives no position a sentence-level role
    # (T5 has no [CLS]), and mean pooling was the best T5-encoder sentence embedding in Sentence-T5
    # (Ni et al., 2021).
    config.model.pooling = "mean"
    config.model.dropout_rate = 0.1
    return finetune_sst2.sst2_recipe(config)
