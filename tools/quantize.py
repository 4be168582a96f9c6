"""Int8 weight-only quantization of a trained checkpoint, with float-vs-int8 figures.

  python tools/quantize.py --workdir=runs/gpt_tiny [--step=N] [--output=DIR] [--json=FILE]

Writes the int8 params (orbax) to <workdir>/int8 and prints parameter bytes in memory and on
disk, validation perplexity and batch-1 decoding speed for both (see lm/quantize.py).
"""
import json

from absl import flags

from lm import cli, quantize

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by tools/train.py.", required=True)
_STEP = cli.define_step_flag()
_OUTPUT = flags.DEFINE_string("output", "", "Where to write the int8 params; empty: <workdir>/int8.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 100, "New tokens for the decoding-speed measurement.")
_JSON = flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def main(argv):
    del argv
    results = quantize.compare(_WORKDIR.value, _STEP.value, _OUTPUT.value, _MAX_NEW.value)
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
