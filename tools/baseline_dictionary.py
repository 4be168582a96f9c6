"""Dictionary baseline for token classification: tag every entity string seen in training.

  python tools/baseline_dictionary.py --train=DATA/wnut17/wnut17train.conll \
      --eval=DATA/wnut17/emerging.dev.conll,DATA/wnut17/emerging.test.conll [--lowercase]

Prints entity-level precision, recall and F1 (seqeval's definition, lm/tagging.py) on each
--eval file: the floor a fine-tuned tagger has to clear.
"""
import json

from absl import flags

from lm import cli, tagging
from lm.data import conll

_TRAIN = flags.DEFINE_string("train", None, "CoNLL file whose entity strings make the dictionary.", required=True)
_EVAL = flags.DEFINE_list("eval", [], "CoNLL files to score.")
_LOWERCASE = flags.DEFINE_bool("lowercase", False, "Match entity strings case-insensitively.")


def main(argv):
    del argv
    tagger = tagging.DictionaryTagger(((s.words, s.tags) for s in conll.read_conll(_TRAIN.value)), _LOWERCASE.value)
    for path in _EVAL.value:
        sentences = conll.read_conll(path)
        scores = tagging.entity_scores([s.tags for s in sentences], [tagger.tag(s.words) for s in sentences])
        print(json.dumps({"file": path, "sentences": len(sentences), **{k: round(v, 4) for k, v in scores.items()}}))


if __name__ == "__main__":
    cli.run(main)
