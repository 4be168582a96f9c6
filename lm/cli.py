"""What every command-line tool shares: the --config flag and clean exits on config errors."""

from __future__ import annotations

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lm import config as config_lib
from lm import workdir


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


def define_step_flag():
    """`--step`: which checkpoint of a trained run a tool reads (lm/workdir.py's `resolve`)."""
    return flags.DEFINE_string("step", "best", "Which checkpoint: best (by the run's selection metric, validation "
                                               "loss unless the objective names another; the newest if none was "
                                               "evaluated), latest, or a step number.")


def load(config_flag) -> config_lib.Config:
    return config_lib.from_config_dict(config_flag.value)


def enable_compilation_cache() -> None:
    """Keeps compiled XLA programs on disk ($LM_CACHE_DIR/xla), so a resumed or repeated run
    skips the compile (6-9 s for gpt_tiny on a 2-core CPU, minutes for large models)."""
    if not jax.config.jax_compilation_cache_dir:
        root = os.environ.get("LM_CACHE_DIR") or os.path.expanduser("~/.cache/lm")
        jax.config.update("jax_compilation_cache_dir", os.path.join(root, "xla"))


def run(main) -> None:
    """absl's app.run, quiet libraries unless -v is given, and ConfigError as one clear line."""

    started = False

    def wrapped(argv):
        nonlocal started
        started = True
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.ERROR)  # tfds and orbax are chatty at INFO
        enable_compilation_cache()
        try:
            return main(argv)
        except config_lib.ConfigError as error:
            _config_error(error)
        except workdir.RunError as error:  # a run stopped for a reason it names (lm/workdir.py)
            sys.exit(f"error: {error}")

    try:
        app.run(wrapped)
    except (AttributeError, KeyError) as error:
        if started:
            raise
        # ml-collections checks --config.* override names while parsing flags: a typo lands here.
        message = str(error).encode().decode("unicode_escape").replace("\n", ": ").replace("'", "")
        _config_error(f"a --config override names no config field: {message}")


