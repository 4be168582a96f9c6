"""Evaluate a trained workdir.

Seq2seq and sft runs: answer a split and report BLEU, ROUGE-1/2/L and exact match (lm/evaluation.py).
  python tools/evaluate.py --workdir=runs/multi30k [--split=validation] [--json=scores.json]
      [--beam_size=4 --length_penalty=0.6] [--max_examples=200] [--lead_sentences=2]
  An sft run (prompt -> response) answers each prompt greedily through its chat template:
  python tools/evaluate.py --workdir=runs/dialogsum_sft --split=test [--max_new_tokens=96] [--lead_sentences=2]
  Writes one prediction a line to --predictions (default <workdir>/predictions_<split>.txt).

Causal LMs (lm/scoring.py): loss, perplexity and bits per byte of any text, each file a document,
with training's own byte accounting; or zero-shot multiple choice (JSON lines of context, choices
and label) by summed and per-character log-likelihood.
  python tools/evaluate.py --workdir=runs/gpt_tiny --text_files='texts/*.txt' [--json=scores.json]
  python tools/evaluate.py --workdir=runs/gpt_tiny --multiple_choice=questions.jsonl

--step: best (by the run's selection metric; the newest if none was evaluated), latest or a number.
"""
import json

from absl import flags

from lm import cli, storage

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir trained with tools/train.py.", required=True)
_TEXT_FILES = flags.DEFINE_string("text_files", "", "Causal LM: score these text files (globs, comma separated).")
_DOCUMENT_UNIT = flags.DEFINE_enum("document_unit", "file", ["file", "paragraph"],
                                   "--text_files: what one document is (the run's data.document_unit to match it).")
_MULTIPLE_CHOICE = flags.DEFINE_string("multiple_choice", "", "Causal LM: JSON lines of context, choices, label.")
_SPLIT = flags.DEFINE_string("split", "validation", "Seq2seq, sft: train | validation | test")
_JSON = flags.DEFINE_string("json", "", "Write the scores here as JSON.")
_PREDICTIONS = flags.DEFINE_string("predictions", "", "Seq2seq, sft: prediction file "
                                   "(default <workdir>/predictions_<split>.txt).")
_BEAM = flags.DEFINE_integer("beam_size", 0, "Seq2seq: beam size; 0: the run's seq2seq.beam_size (1 is greedy).")
_PENALTY = flags.DEFINE_float("length_penalty", -1.0, "Seq2seq: beam length penalty alpha; < 0: the run's setting.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 0, "Seq2seq, sft: answer only the first N examples; 0: all.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 0, "Sft: longest response in tokens; 0: 128.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples (seq2seq) or windows and choices (causal LM) at once.")
_STEP = cli.define_step_flag()
_LEAD = flags.DEFINE_integer("lead_sentences", 0, "Seq2seq, sft: also score the lead baseline: the input's first N "
                             "sentences.")


def _answered() -> dict:
    from lm import evaluation  # noqa: PLC0415

    result = evaluation.evaluate_workdir(_WORKDIR.value, _SPLIT.value, _BEAM.value, _PENALTY.value,
                                         _MAX_EXAMPLES.value, _BATCH.value, _STEP.value, _LEAD.value,
                                         _MAX_NEW.value)
    path = _PREDICTIONS.value or storage.join(_WORKDIR.value, f"predictions_{_SPLIT.value}.txt")
    storage.write_text(path, "".join(p.replace("\n", " ") + "\n" for p in result.predictions))
    print(f"predictions: {path}")
    return result.metrics


def _causal_lm() -> dict:
    from lm import scoring  # noqa: PLC0415
    from lm.data import corpus  # noqa: PLC0415

    scorer = scoring.Scorer.load(_WORKDIR.value, _STEP.value, _BATCH.value)
    result = {"step": scorer.run.step}
    if _TEXT_FILES.value:
        files = corpus.expand_files(_TEXT_FILES.value, "--text_files")
        result.update(scoring.score_text(scorer, files, _DOCUMENT_UNIT.value))
    if _MULTIPLE_CHOICE.value:
        result.update(scoring.score_choices(scorer, scoring.read_questions(_MULTIPLE_CHOICE.value)))
    return result


def main(argv):
    del argv
    metrics = _causal_lm() if _TEXT_FILES.value or _MULTIPLE_CHOICE.value else _answered()
    print(json.dumps(metrics, indent=2))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(metrics, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
