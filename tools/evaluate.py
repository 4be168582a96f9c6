"""Decode a split with a trained seq2seq workdir and report BLEU and ROUGE-1/2/L.

  python tools/evaluate.py --workdir=runs/multi30k [--split=validation] [--json=scores.json]
      [--beam_size=4 --length_penalty=0.6] [--max_examples=200] [--lead_sentences=2]

Uses the workdir's best checkpoint by validation loss (else the newest), writes one prediction
a line to --predictions (default <workdir>/predictions_<split>.txt) and prints the scores.
"""
import json
import os

from absl import flags

from lm import cli, evaluation

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir trained with tools/train.py (seq2seq).", required=True)
_SPLIT = flags.DEFINE_string("split", "validation", "train | validation | test")
_JSON = flags.DEFINE_string("json", "", "Write the scores here as JSON.")
_PREDICTIONS = flags.DEFINE_string("predictions", "", "Prediction file (default <workdir>/predictions_<split>.txt).")
_BEAM = flags.DEFINE_integer("beam_size", 0, "Beam size; 0: the run's seq2seq.beam_size (1 is greedy).")
_PENALTY = flags.DEFINE_float("length_penalty", -1.0, "Beam length penalty alpha; < 0: the run's setting.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 0, "Decode only the first N examples; 0: all.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples decoded together.")
_STEP = cli.define_step_flag()
_LEAD = flags.DEFINE_integer("lead_sentences", 0, "Also score the lead baseline: the input's first N sentences.")


def main(argv):
    del argv
    result = evaluation.evaluate_workdir(_WORKDIR.value, _SPLIT.value, _BEAM.value, _PENALTY.value,
                                         _MAX_EXAMPLES.value, _BATCH.value, _STEP.value, _LEAD.value)
    path = _PREDICTIONS.value or os.path.join(_WORKDIR.value, f"predictions_{_SPLIT.value}.txt")
    with open(path, "w") as f:
        f.writelines(p.replace("\n", " ") + "\n" for p in result.predictions)
    print(json.dumps(result.metrics, indent=2))
    print(f"predictions: {path}")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(result.metrics, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
