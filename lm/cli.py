"""What every command-line tool shares: the --config flag and clean exits on config errors."""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lm import config as config_lib


def _config_error(error) -> None:
    sys.exit(f"config error: {error}")


def define_config_flag(default: str = "configs/gpt_tiny.py"):
    """`--config=FILE` plus `--config.section.field=value` overrides. ml-collections checks
    override names while defining the flag, so a typo is caught (and explained) here."""
    try:
        return config_flags.DEFINE_config_file("config", default, "Config file (ml-collections).", lock_config=True)
    except (AttributeError, KeyError) as error:
        message = str(error).encode().decode("unicode_escape").replace("\n", ": ").replace("'", "")
        _config_error(f"a --config override names no config field: {message}")


def load(config_flag) -> config_lib.Config:
    return config_lib.from_config_dict(config_flag.value)


def run(main) -> None:
    """absl's app.run, quiet libraries unless -v is given, and ConfigError as one clear line."""

    def wrapped(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.ERROR)  # tfds and orbax are chatty at INFO
        try:
            return main(argv)
        except config_lib.ConfigError as error:
            _config_error(error)

    app.run(wrapped)


