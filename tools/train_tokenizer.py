"""Train a sentencepiece tokenizer on a config's training split and write the .model file.

  python tools/train_tokenizer.py --config=configs/gpt_tiny.py --output=/tmp/shakespeare.model \
      [--config.tokenizer.vocab_size=2048 --config.tokenizer.model_type=unigram]

Use it with --config.tokenizer.path=/tmp/shakespeare.model. (Without a path, training runs
train the same tokenizer on first use and cache it.)
"""
from absl import flags

from lm import cli
from lm.data import corpus, text, tokenizer

_CONFIG = cli.define_config_flag()
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .model file.", required=True)


def main(argv):
    del argv
    config = cli.load(_CONFIG)
    source = corpus.open_split(config.data, config.data.train_split)
    trained = tokenizer.train((text.clean(d) for d in source), config.tokenizer)
    trained.save(_OUTPUT.value)
    sample = "To be, or not to be, that is the question."
    print(f"wrote {_OUTPUT.value}: {trained.vocab_size} pieces; {sample!r} -> {len(trained.encode(sample))} tokens")


if __name__ == "__main__":
    cli.run(main)
