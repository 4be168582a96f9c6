"""Hugging Face interop: checkpoints move between transformers and our workdirs.

Each architecture module (gpt2.py, llama.py, t5.py, bert.py) knows one Hugging Face `model_type` and maps it
onto one of our model families with four functions:

  model_config(hf_config: dict) -> ModelConfig        (refuses features we do not model)
  import_params(model, tensors, source, hf_config)    (our Flax tree, layers unstacked)
  check_exportable(model) -> None                     (refuses configs the format cannot hold)
  export(model, params) -> (hf_config: dict, tensors) (flat torch names, float32 numpy)

A module may also set OBJECTIVE, the train.objective an imported workdir gets (default
causal_lm; t5.py: seq2seq), or define `objective(model) -> str` when it depends on the model
(bert.py: mlm_nsp or classification), and `import_notes(hf_config, hf_dir) -> list[str]`, lines
the import prints. Adding an architecture is a new module registered in ARCHITECTURES.
"""

from __future__ import annotations

from types import ModuleType

from lm.config import ModelConfig
from lm.interop import bert, gpt2, llama, t5
from lm.interop.core import ConversionError

ARCHITECTURES: dict[str, ModuleType] = {"gpt2": gpt2, "llama": llama, "t5": t5, "bert": bert}


def for_model_type(model_type: str) -> ModuleType:
    for module in ARCHITECTURES.values():
        if model_type in module.MODEL_TYPES:
            return module
    raise ConversionError(f"config.json has model_type={model_type!r}; we convert "
                          f"{', '.join(t for m in ARCHITECTURES.values() for t in m.MODEL_TYPES)}")


def default_architecture(model: ModelConfig) -> str:
    """The Hugging Face architecture whose shape this model has (learned positions: GPT-2)."""
    if model.family in ("t5", "bert"):
        return model.family
    if model.family != "gpt":
        raise ConversionError(f"model.family={model.family!r} has no Hugging Face exporter (gpt, t5 and bert have)")
    return "gpt2" if model.positions == "learned" else "llama"


def get(architecture: str) -> ModuleType:
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"unknown architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]
