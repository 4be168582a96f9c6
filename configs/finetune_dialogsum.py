"""finetune_dialogsum: t5_tiny fine-tuned to summarise dialogues on DialogSum.

python tools/train.py --config=configs/finetune_dialogsum.py --workdir=runs/dialogsum \
    --config.init_from=runs/t5_wikitext
python tools/evaluate.py --workdir=runs/dialogsum --json=runs/dialogsum/scores.json --lead_sentences=2

Reads dialogsum/ from the data directory ($LM_DATA_DIR or --config.data.data_dir; docs/data.md)
(12,460 training dialogues, 500 dev as validation, 500 test with
three reference summaries each: `tools/evaluate.py --split=test` scores against all three).
Dialogues longer than seq2seq.input_len tokens are truncated; the lead baseline reads the
whole dialogue.
"""
from configs import t5_tiny

DIALOGSUM = "dialogsum"  # in the data directory: $LM_DATA_DIR or --config.data.data_dir (docs/data.md)


def get_config():
    config = t5_tiny.get_config()
    config.train.objective = "seq2seq"
    config.init_from = ""
    config.data.train_files = f"{DIALOGSUM}/dialogsum.train.jsonl"
    config.data.validation_files = f"{DIALOGSUM}/dialogsum.dev.jsonl"
    s = config.seq2seq
    s.input_key, s.target_key = "dialogue", "summary"
    s.test_files = f"{DIALOGSUM}/dialogsum.test.jsonl"
    s.test_reference_keys = "summary1,summary2,summary3"  # the test file's three human summaries
    s.input_prefix = "summarize: "
    s.input_len, s.target_len = 384, 96
    s.beam_size, s.length_penalty = 4, 0.6
    config.data.seq_len = 384
    return dialogsum_schedule(config)


def dialogsum_schedule(config):
    """DialogSum's training schedule, shared with the SFT counterpart (finetune_dialogsum_sft)."""
    config.train.steps = 1000
    config.train.batch_size = 8
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 50
    config.eval.every_steps = 250
    config.eval.batch_size = 16
    config.checkpoint.every_steps = 250
    return config
