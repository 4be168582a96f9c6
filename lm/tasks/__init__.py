"""Training objectives, chosen by `train.objective`: each module defines an `Objective` (the
device side: loss, metrics) and a `Pipeline` (the host side: data, samples, reports); the
interface and its defaults are in lm/tasks/base.py.

To add an objective: a module here with the two classes, a line in `_REGISTRY`, and the name
among `train.objective`'s choices in lm/config.py (docs/architecture.md walks through it).
"""

from __future__ import annotations

import importlib

from lm.config import Config
from lm.tasks.base import Objective, Pipeline, Task

# train.objective -> (module under lm.tasks, Objective class, Pipeline class). Modules are
# imported on demand: they pull in the data stack, which device-side users do not need.
_REGISTRY = {
    "causal_lm": ("causal_lm", "CausalLM", "CausalLMPipeline"),
    "mlm_nsp": ("mlm_nsp", "MlmNsp", "MlmNspPipeline"),
    "classification": ("classification", "Classification", "ClassificationPipeline"),
    "span_corruption": ("span_corruption", "SpanCorruption", "SpanCorruptionPipeline"),
    "denoise": ("span_corruption", "Denoising", "DenoisingPipeline"),
    "prefix_lm": ("span_corruption", "PrefixLM", "PrefixLMPipeline"),
    "seq2seq": ("seq2seq", "Seq2Seq", "Seq2SeqPipeline"),
    "token_classification": ("token_classification", "TokenClassification", "TokenClassificationPipeline"),
    "extractive_qa": ("extractive_qa", "ExtractiveQA", "ExtractiveQAPipeline"),
    "sft": ("sft", "Sft", "SftPipeline"),
}


def _classes(config: Config):
    module_name, objective, pipeline = _REGISTRY[config.train.objective]
    module = importlib.import_module(f"lm.tasks.{module_name}")
    return getattr(module, objective), getattr(module, pipeline)


def objective(config: Config) -> Objective:
    """The device side alone (what the steps, the optimizer and checkpoint loading need)."""
    return _classes(config)[0](config)


def get(config: Config) -> Task:
    objective_cls, pipeline_cls = _classes(config)
    return Task(objective_cls(config), pipeline_cls(config))


__all__ = ["Objective", "Pipeline", "Task", "get", "objective"]
