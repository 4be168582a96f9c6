"""Every config and experiment in the repository loads and passes validation."""

import glob
import importlib
import os

import pytest

from lm import config as config_lib

from conftest import REPO

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(str(REPO / "configs" / "*.py"))
                 if not p.endswith("__init__.py"))
EXPERIMENTS = sorted(os.path.basename(p)[:-3] for p in glob.glob(str(REPO / "experiments" / "*.py"))
                     if not p.endswith("__init__.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
    config = config_lib.from_config_dict(importlib.import_module(f"configs.{name}").get_config())
    assert config.train.steps > 0


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_points_are_valid_overrides(name):
    experiment = importlib.import_module(f"experiments.{name}")
    points = experiment.points()
    assert points, "an experiment has at least one point"
    for overrides in points.values():
        config_lib.from_config_dict(experiment.get_config(), overrides)  # refuses unknown keys, wrong types


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(config_lib.ConfigError, match="did you mean 'optimizer.learning_rate'"):
        config_lib.from_config_dict({"optimizer": {"learning_rat": 1e-3}})
    with pytest.raises(config_lib.ConfigError, match="must be of type int"):
        config_lib.from_config_dict({"train": {"steps": "ten"}})
    with pytest.raises(config_lib.ConfigError, match="num_kv_heads"):
        config_lib.from_config_dict({"model": {"num_heads": 4, "num_kv_heads": 3}})


def test_dotted_overrides_apply_like_command_line_flags():
    from configs import gpt_tiny

    base = gpt_tiny.get_config()
    config = config_lib.from_config_dict(base, {"train.steps": 7, "optimizer.learning_rate": 2, "init_from": "w"})
    assert (config.train.steps, config.optimizer.learning_rate, config.init_from) == (7, 2.0, "w")
    assert base.train.steps != 7, "the caller's ConfigDict is left as it was"
    with pytest.raises(config_lib.ConfigError, match="did you mean 'train.steps'"):
        config_lib.from_config_dict(base, {"train.step": 7})
    with pytest.raises(config_lib.ConfigError, match="train.steps.*must be of type int"):
        config_lib.from_config_dict(base, {"train.steps": "ten"})
    with pytest.raises(config_lib.ConfigError, match="'train.steps.x'"):
        config_lib.from_config_dict(base, {"train.steps.x": 1})
