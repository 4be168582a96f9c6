"""Named entities on WNUT-17 (emerging entities in social media text): a BIO tagger on bert_tiny.

python tools/train.py --config=configs/finetune_wnut17.py --workdir=runs/wnut17 [--config.init_from=runs/bert_tiny]

Token classification (train.objective=token_classification): a tag per word from the first
piece of each word. 13 tags: O and B-/I- of person, location, group, creative-work,
corporation and product. The checkpoint is selected by entity-level F1 on emerging.dev
(eval/f1, seqeval's definition); emerging.test is scored once, on that checkpoint, into
<workdir>/eval_report.json (test/f1). The baseline that tags every training entity string:
python tools/baseline_dictionary.py --train=$LM_DATA_DIR/wnut17/wnut17train.conll \
    --eval=$LM_DATA_DIR/wnut17/emerging.test.conll --lowercase

Data: wnut17/ in the data directory ($LM_DATA_DIR or --config.data.data_dir; docs/data.md says where WNUT-17 comes from,
CC BY 4.0), or point finetune.train_files / validation_files / test_files at your copy of the
CoNLL files. Without init_from the
encoder trains from scratch with a tokenizer trained on the training sentences.
"""
from configs import finetune_sst2, bert_tiny

WNUT17 = "wnut17"  # in the data directory: $LM_DATA_DIR (docs/data.md)


def get_config():
    config = bert_tiny.get_config()  # lowercase and shapes as the pretraining run, for init_from
    config.train.objective = "token_classification"
    config.model.num_classes = 13
    config.model.classify = "token"
    config.model.dropout_rate = 0.1
    f = config.finetune
    f.train_files = f"{WNUT17}/wnut17train.conll"
    f.validation_files = f"{WNUT17}/emerging.dev.conll"
    f.test_files = f"{WNUT17}/emerging.test.conll"
    config.data.seq_len = 128
    config.train.steps = 600  # ~5.7 epochs of 3,394 sentences
    config.train.batch_size = 32
    config.eval.max_batches = 0
    return finetune_sst2.finetune_schedule(config)
