"""Train (or resume) a model.

  python tools/train.py --config=configs/gpt_tiny.py --workdir=/tmp/gpt_tiny \
      [--config.train.steps=240 --config.optimizer.learning_rate=1e-3 ...]

Run it again with the same workdir and it resumes from the newest checkpoint.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import flags  # noqa: E402

from lm import cli, trainer  # noqa: E402

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.", required=True)


def main(argv):
    del argv
    trainer.train(cli.load(_CONFIG), _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
