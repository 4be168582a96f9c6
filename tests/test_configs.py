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
        config = experiment.get_config()
        for dotted, value in overrides.items():
            section, field = dotted.split(".")
            config[section][field] = value  # a locked ConfigDict refuses unknown keys
        config_lib.from_config_dict(config)


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(config_lib.ConfigError, match="did you mean 'optimizer.learning_rate'"):
        config_lib.from_config_dict({"optimizer": {"learning_rat": 1e-3}})
    with pytest.raises(config_lib.ConfigError, match="must be of type int"):
        config_lib.from_config_dict({"train": {"steps": "ten"}})
    with pytest.raises(config_lib.ConfigError, match="num_kv_heads"):
        config_lib.from_config_dict({"model": {"num_heads": 4, "num_kv_heads": 3}})
