"""The config a workdir was trained (or converted) with, to fine-tune or resume it:

  python tools/train.py --config=configs/workdir.py:DIR --workdir=DIR --config.train.steps=500

`DIR/config.json` is the config, with its tokenizer pointing at `DIR/tokenizer.model`; any
`--config.section.field=value` overrides it as usual (a workdir imported by tools/convert.py
has seen none of our data: fine-tune it into a new --workdir with --config.init_from=DIR, or
resume it in place with other data or batch size and --allow_config_change).
Without an argument (as the test that loads every config calls it), the base config.
"""
import ml_collections

from configs import base
from lm import config as lm_config
from lm import workdir as lm_workdir


def get_config(workdir: str | None = None) -> ml_collections.ConfigDict:
    if not workdir:
        return base.get_config()
    config = ml_collections.ConfigDict(lm_config.to_dict(lm_workdir.read_config(workdir)))
    config.lock()
    return config
