"""The schema's sections that belong to one objective or technique: distillation, the
encoder-decoder objectives, BERT's pretraining and fine-tuning. Part of lm/config.py's schema
(it composes them into `Config`); split off only to keep each module short.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from lm.config_fields import setting


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (lm/distill.py): a trained workdir with the same tokenizer teaches this run's model.
    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy."""
    guarded_on_resume: ClassVar[bool] = False

    teacher_workdir: str = setting("", "empty: no teacher (ordinary training).", guarded=True)
    teacher_step: int = setting(0, "0: the teacher's best checkpoint (lm/workdir.py's resolve); else that step.", guarded=True)
    temperature: float = setting(2.0, "T above: softens both distributions; > 0.", within="(0, inf)")
    alpha: float = setting(0.5, "weight of the distillation term, in [0, 1].", within="[0, 1]")


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    """Encoder-decoder tasks (lm/tasks/seq2seq.py, span_corruption.py). Local pairs come from data.train_files /
    data.validation_files / test_files: JSON lines with input_key and target_key, or parallel text files named with
    a "{key}" placeholder (e.g. "multi30k/train.{key}.gz", one example a line, .gz read as gzip); a tfds dataset
    (data.tfds_name) gives its features input_key and target_key."""
    guarded_on_resume: ClassVar[bool] = False

    input_key: str = setting("inputs", "field (or file {key}) of the inputs.", guarded=True)
    target_key: str = setting("targets", "field (or file {key}) of the targets.", guarded=True)
    input_prefix: str = setting("", "prepended to every input, e.g. \"translate English to German: \"", guarded=True)
    test_files: str = setting("", "local files for tools/evaluate.py --split=test")
    test_reference_keys: str = setting("", "the test split's reference fields when they are not target_key, comma "
                                           "separated (DialogSum's test file: \"summary1,summary2,summary3\"): BLEU "
                                           "and ROUGE score against all of them; the first is the target.")
    input_len: int = setting(128, "encoder tokens per row (longer inputs are truncated)", guarded=True)
    target_len: int = setting(64, "decoder tokens per row; span corruption derives its own from input_len",
                              guarded=True)
    noise_density: float = setting(0.15, "span corruption: fraction of tokens masked ...", guarded=True)
    mean_noise_span_length: float = setting(3.0, "... in spans of this mean length", guarded=True)
    beam_size: int = setting(1, "decoding (samples, tools/evaluate.py): 1 is greedy", within="[1, inf)")
    length_penalty: float = setting(0.6, "beam search: score / ((5 + length) / 6) ** length_penalty")


@dataclasses.dataclass(frozen=True)
class MlmConfig:
    """Masked-LM + next-sentence pretraining (train.objective=mlm_nsp, lm/tasks/mlm_nsp.py)."""
    guarded_on_resume: ClassVar[bool] = True  # they decide what the examples are

    document_boundary: str = setting("heading", "where documents of data.train_files start.", choices={
        "heading": "WikiText ` = Title = ` lines start articles", "paragraph": "blank lines"})
    mask_rate: float = setting(0.15, "share of a pair's tokens selected for prediction ...")
    mask_token_fraction: float = setting(0.8, "... of which this share becomes [MASK],")
    random_token_fraction: float = setting(0.1, "this share a random piece, and the rest stays unchanged.")
    max_predictions: int = setting(20, "masked positions per example the MLM head scores (static shape).")
    short_pair_rate: float = setting(0.1, "pairs made shorter than data.seq_len, so short inputs are seen too.")
    nsp_weight: float = setting(1.0, "loss = MLM loss + nsp_weight * NSP loss.", within="[0, inf)")
    corpus: str = setting("files", "where the documents come from.", choices={
        "files": "documents from data.train_files",
        "finetune_task": "finetune.task's own training inputs, labels dropped (task-adaptive pretraining: continue "
                         "a pretrained encoder's MLM on the task's text)"})


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning on labelled data: classification (lm/tasks/classification.py), token_classification,
    extractive_qa and sft (docs/finetune.md)."""
    guarded_on_resume: ClassVar[bool] = False

    task: str = setting("sst2", "the GLUE task.", choices=("sst2", "mrpc", "rte"), guarded=True)
    data_dir: str = setting("", "folder with the task's files; empty: <data.data_dir or $LM_DATA_DIR>/<task>.",
                            guarded=True)
    tfds_name: str = setting("", "e.g. \"glue/sst2\": read from tfds instead (needs the dataset prepared or "
                                 "allow_download).", guarded=True)
    select_metric: str = setting("accuracy", "validation metric for early stopping and the best checkpoint (higher "
                                             "is better).", choices=("accuracy", "f1", "precision", "recall"))
    freeze_encoder: bool = setting(False, "train the head (and BERT's pooler) only: classification, "
                                          "token_classification and extractive_qa, every family they allow.")
    layer_lr_decay: float = setting(1.0, "layer-wise learning-rate decay of the body under the head (the same "
                                         "objectives and families): layer i of N learns at decay^(N - i) of the "
                                         "rate, the embeddings at decay^(N + 1); 1.0: off.")
    init_checkpoint: str = setting("best", "which checkpoint of an init_from workdir.", choices={
        "best": "by validation loss", "latest": "the newest"})
    init_shrink: float = setting(1.0, "init_from: shrink and perturb (Ash & Adams, 2020). Each pretrained matrix it "
                                      "takes (all, or the task's subtree: BERT's encoder) starts as init_shrink * "
                                      "pretrained + init_perturb * a fresh init (norm scales and biases stay as "
                                      "trained). 1.0 and 0.0: the pretrained params unchanged.")
    init_perturb: float = setting(0.0, "see init_shrink.")
    # The user's own labelled files (classification, token_classification, extractive_qa, sft).
    train_files: str = setting("", "training files or globs, comma separated: .csv/.tsv/.jsonl (classification), "
                                   ".conll (token_classification), SQuAD .json (extractive_qa), .jsonl (sft). "
                                   "Set: they replace finetune.task's built-in data.", guarded=True)
    validation_files: str = setting("", "the split that selects the checkpoint (early stopping, best).", guarded=True)
    test_files: str = setting("", "a held-out split, scored on the best checkpoint only and reported apart "
                                  "(eval_report.json: test/...).", guarded=True)
    text_fields: str = setting("text", "classification: the text field, or two comma separated (a pair); sft: the "
                                       "prompt field.", guarded=True)
    label_field: str = setting("label", "classification: the label field (any strings: their names, from the "
                                        "training split, go to eval_report.json); sft: the response field.",
                               guarded=True)
    max_question_tokens: int = setting(64, "extractive_qa: questions are cut to this many tokens.", guarded=True)
    doc_stride: int = setting(128, "extractive_qa: context windows start every this many tokens (they overlap by "
                                   "the window's context length minus this).", guarded=True)
    max_answer_tokens: int = setting(30, "extractive_qa: longest span predicted.")
    test_reference_fields: str = setting("", "sft: the test split's reference fields when they are not label_field, "
                                             "comma separated (DialogSum's test file: \"summary1,summary2,summary3\"): "
                                             "tools/evaluate.py scores ROUGE against all of them.")
    max_prompt_tokens: int = setting(0, "sft: a longer prompt keeps its first this many tokens, before the chat "
                                        "template wraps it (training, evaluation and generate --chat alike); 0: "
                                        "none cut (an example whose prompt fills the row is dropped).", guarded=True)
    chat_template: str = setting("### Instruction:\n{prompt}\n\n### Response:\n", "sft: how a prompt is shown; "
                                 "the response follows. Kept in the workdir's config; tools/generate.py --chat "
                                 "applies it.", guarded=True)
