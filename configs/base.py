"""The base config: every key a run may set, with its default (declared in lm/config.py).

Other configs call `base.get_config()` and override what differs, so a config file is
the whole story of a run, and `--config.section.field=value` works for every field.
"""
import ml_collections

from lm import config as lm_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(lm_config.to_dict(lm_config.Config()))
    config.lock()  # a typo in an override is an error, not a new key.
    return config
