"""Hugging Face directory <-> our workdir (config.json, tokenizer.model, orbax checkpoint).

A checkpoint's tokenizer comes in as the workdir's `tokenizer.model`: a sentencepiece model as
is, or a Hugging Face tokenizer.json wrapped with its special tokens (lm/data/hf_tokenizer.py);
every reader tells the two apart by content.

An imported workdir looks like one tools/train.py wrote at step 0: the full train state
(converted params, a fresh optimizer state) is checkpointed through lm/checkpoint.py, so
tools/train.py resumes (fine-tunes) it and tools/generate.py decodes from it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Callable

import jax
import numpy as np

from lm import checkpoint as checkpoint_lib
from lm import interop, optimizer, pretrained, sharding, steps, tasks
from lm import workdir as workdir_lib
from lm.config import CheckpointConfig, Config, DataConfig, MeshConfig, TokenizerConfig, TrainConfig
from lm.data.hf_tokenizer import HFTokenizer
from lm.data.tokenizer import Tokenizer
from lm.interop import core, safetensors_io

TOKENIZER = "tokenizer.model"  # the workdir's tokenizer file: sentencepiece, or our HF wrapper (JSON)
HF_TOKENIZER = "tokenizer.json"


def _find_tokenizer(hf_dir: str, tokenizer_path: str, vocab_size: int, log) -> Tokenizer | HFTokenizer | None:
    """The explicit --tokenizer (a sentencepiece .model or a tokenizer.json), else the HF dir's
    sentencepiece tokenizer.model, else its tokenizer.json (with tokenizer_config.json's special
    tokens), else None."""
    if tokenizer_path and not os.path.exists(tokenizer_path):
        raise core.ConversionError(f"--tokenizer={tokenizer_path} does not exist")
    candidates = [tokenizer_path] if tokenizer_path else [os.path.join(hf_dir, n) for n in (TOKENIZER, HF_TOKENIZER)]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        log(f"note: {hf_dir} has neither a sentencepiece {TOKENIZER} nor a Hugging Face {HF_TOKENIZER}. "
            f"The workdir gets weights and config only: tools/train.py and tools/generate.py need a tokenizer, so "
            f"convert into a new workdir with --tokenizer=PATH (a sentencepiece .model or a tokenizer.json whose "
            f"ids match the checkpoint's). tools/convert.py --to_hf works without one.")
        return None
    tokenizer = Tokenizer.load(path)
    if tokenizer.vocab_size > vocab_size:
        raise core.ConversionError(f"tokenizer {path} has {tokenizer.vocab_size} pieces but the checkpoint's "
                                   f"vocabulary is {vocab_size}: give the tokenizer the model was trained with")
    return tokenizer


def run_config(model, tokenizer_path: str, objective: str = "causal_lm") -> Config:
    """Defaults for everything but the model: fine-tuning overrides data, optimizer and steps."""
    data = DataConfig()
    if model.positions == "learned":
        data = dataclasses.replace(data, seq_len=min(data.seq_len, model.max_len))
    return Config(model=model, data=data, tokenizer=TokenizerConfig(path=tokenizer_path),
                  train=TrainConfig(objective=objective))


def _check_tree(params, abstract_params, source: str) -> None:
    """Converted params must have exactly the tree, shapes and dtypes our model initialises."""
    want = {jax.tree_util.keystr(p): (tuple(a.shape), a.dtype) for p, a in
            jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    have = {jax.tree_util.keystr(p): (tuple(np.shape(a)), np.asarray(a).dtype) for p, a in
            jax.tree_util.tree_flatten_with_path(params)[0]}
    diff = sorted(set(want.items()) ^ set(have.items()))
    core.require(not diff, f"converting {source} gave parameters that differ from our model's "
                           f"(name, (shape, dtype)): {diff[:4]}")


def import_hf(hf_dir: str, workdir: str, tokenizer_path: str = "", log: Callable[[str], None] = print) -> Config:
    """Writes `workdir` (config.json, tokenizer.model if known, checkpoint 0) from a Hugging
    Face directory. Refuses a workdir that already holds checkpoints."""
    if workdir_lib.has_checkpoints(workdir):
        raise core.ConversionError(f"{workdir} already holds checkpoints: choose an empty --workdir")
    hf_config, raw = safetensors_io.read_hf_dir(hf_dir)
    architecture = interop.for_model_type(hf_config.get("model_type", ""))
    model = architecture.model_config(hf_config)
    params = architecture.import_params(model, raw, hf_dir, hf_config)
    del raw
    for note in getattr(architecture, "import_notes", lambda *_: [])(hf_config, hf_dir):
        log(note)
    tokenizer = _find_tokenizer(hf_dir, tokenizer_path, model.vocab_size, log)
    os.makedirs(workdir, exist_ok=True)
    workdir_tokenizer = os.path.abspath(os.path.join(workdir, TOKENIZER))
    if tokenizer is not None:
        tokenizer.save(workdir_tokenizer)
    objective = (architecture.objective(model) if hasattr(architecture, "objective")
                 else getattr(architecture, "OBJECTIVE", "causal_lm"))
    config = run_config(model, workdir_tokenizer if tokenizer is not None else "", objective)

    mesh = sharding.make_mesh(MeshConfig())
    _, abstract, _ = pretrained.abstract_params(config, mesh)
    _check_tree(params, abstract, hf_dir)
    params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x, s.dtype), s.sharding), params, abstract)
    # Step 0 of a run of `config`, as the trainer would start it: the state every loader rebuilds.
    tx = optimizer.for_task(config, tasks.objective(config))
    state = jax.jit(lambda p: steps.state_from_params(p, tx, config.train.seed))(params)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                               CheckpointConfig(async_save=False), log)
    try:
        checkpointer.save(0, state, None)
    finally:
        checkpointer.close()
    workdir_lib.write_run_files(workdir, config)
    workdir_lib.write_json(os.path.join(workdir, "converted_from.json"),
                           {"hf_dir": os.path.abspath(hf_dir), "model_type": hf_config.get("model_type"),
                            "hf_config": hf_config})
    return config


def export_hf(workdir: str, hf_dir: str, which: str | int = "best", architecture: str = "",
              log: Callable[[str], None] = print) -> tuple[str, int]:
    """Writes checkpoint `which` (lm/workdir.py's `resolve`: best, latest or a step) of `workdir`
    as a Hugging Face directory; returns (architecture, step)."""
    workdir, step = workdir_lib.resolve(workdir, which)
    config = workdir_lib.read_config(workdir, require_tokenizer=False)
    architecture = architecture or interop.default_architecture(config.model)
    exporter = interop.get(architecture)
    exporter.check_exportable(config.model)  # before the (slow) restore
    _, params, _ = pretrained.restore_params(workdir, config, step, log=log)
    params = core.unstack_layers(jax.tree.map(np.asarray, jax.device_get(params)))
    hf_config, tensors = exporter.export(config.model, params)
    safetensors_io.write_hf_dir(hf_dir, hf_config, tensors)
    if config.tokenizer.path:
        tokenizer = Tokenizer.load(config.tokenizer.path)
        if isinstance(tokenizer, HFTokenizer):  # back to the files transformers' AutoTokenizer reads
            tokenizer.save_tokenizer_json(os.path.join(hf_dir, HF_TOKENIZER))
            workdir_lib.write_json(os.path.join(hf_dir, "tokenizer_config.json"), {
                "tokenizer_class": "PreTrainedTokenizerFast",
                **{f"{role}_token": name for role, name in tokenizer.special_tokens.items() if name}})
        else:  # our sentencepiece model, for users who tokenize with it
            shutil.copyfile(config.tokenizer.path, os.path.join(hf_dir, TOKENIZER))
    return architecture, step
