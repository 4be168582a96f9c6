"""finetune_dialogsum_sft: gpt_tiny instruction-tuned to summarise dialogues (DialogSum posed as
"Summarise the dialogue:"), the decoder counterpart of configs/finetune_dialogsum.py (T5).

python tools/train.py --config=configs/finetune_dialogsum_sft.py --workdir=runs/dialogsum_sft \
    [--config.init_from=runs/gpt_tiny --config.model.max_len=... as that run]
python tools/evaluate.py --workdir=runs/dialogsum_sft --split=test --lead_sentences=2 --max_new_tokens=96

Reads dialogsum/ from the data directory ($LM_DATA_DIR or --config.data.data_dir; docs/data.md):
12,460 training dialogues, 500 dev (selection: response loss), 500 test with three reference
summaries each (finetune.test_reference_fields: ROUGE takes the best per example). The loss is
on the summary only (train.objective=sft, lm/data/sft.py). A dialogue keeps its first 384
tokens, as the T5 fine-tune's encoder does (seq2seq.input_len), so the two read the same
amount of it with vocabularies of the same size trained on the same text; tools/evaluate.py
answers each test prompt greedily, up to --max_new_tokens (96: T5's seq2seq.target_len).
"""
from configs import finetune_dialogsum, gpt_tiny

DIALOGSUM = "dialogsum"  # in the data directory: $LM_DATA_DIR or --config.data.data_dir (docs/data.md)


def get_config():
    config = gpt_tiny.get_config()
    config.train.objective = "sft"
    f = config.finetune
    f.train_files = f"{DIALOGSUM}/dialogsum.train.jsonl"
    f.validation_files = f"{DIALOGSUM}/dialogsum.dev.jsonl"
    f.test_files = f"{DIALOGSUM}/dialogsum.test.jsonl"
    f.text_fields, f.label_field = "dialogue", "summary"
    f.test_reference_fields = "summary1,summary2,summary3"  # the test file's three human summaries
    f.chat_template = "Summarise the dialogue:\n{prompt}\n\nSummary:\n"
    f.max_prompt_tokens = 384
    # A row holds the longest prompt (384 tokens and the template) and a summary of up to ~120.
    config.data.seq_len = config.model.max_len = 512
    config.tokenizer.vocab_size = 2048  # t5_tiny's
    return finetune_dialogsum.dialogsum_schedule(config)
