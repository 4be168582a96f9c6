"""What the fine-tuning tasks on one-example rows share (classification on user files,
token_classification, extractive_qa): the family's forward call, the tokenizer rule, and
random-access rows with padding for whole evaluation batches."""

from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp
import numpy as np

from lm.config import Config, ConfigError
from lm.data import corpus as corpus_lib
from lm.data import tokenizer as tokenizer_lib
from lm.models.heads import HEAD
from lm.tasks import base


class HeadObjective(base.Objective):
    """An objective that puts a fresh head on a (usually pretrained) body and reads rows of
    lm/data/rows.py: init_from takes BERT's encoder subtree, all of a GPT but its head, or a
    T5's encoder, its norm and position bias and the token embeddings (the parameters a T5
    classifier has, lm/models/t5.py; the source's decoder is left behind)."""

    def __init__(self, config: Config):
        super().__init__(config)
        self.family = config.model.family
        if self.family == "bert":
            from lm.models.bert import ENCODER  # noqa: PLC0415

            self.init_from_subtree = ENCODER
        else:
            self.init_from_new = (HEAD,)
        # Only freezing or decay needs the optimizer's scaling steps; without them its state keeps
        # the plain layout (token_classification and extractive_qa workdirs were saved with it).
        f = config.finetune
        self.update_scale = self.learning_rate_factor if f.freeze_encoder or f.layer_lr_decay != 1.0 else None

    def init_inputs(self):
        tokens = jnp.zeros((1, self.config.data.seq_len), jnp.int32)
        return (tokens, tokens, tokens + 1) if self.family == "bert" else (tokens, None, tokens + 1)

    def logits(self, model, params, batch, rng, deterministic: bool):
        return logits(model, params, batch, self.family, rng, deterministic)

    # Optimizer: per-parameter learning-rate factors (lm/optimizer.py).
    def learning_rate_factor(self, path) -> float:
        """The head (and BERT's pooler, which its sequence head reads) learns at the full rate.
        The body under it (BERT's encoder subtree; all of a GPT or a T5 encoder but the head) is
        frozen by finetune.freeze_encoder; with finetune.layer_lr_decay d < 1, its depth k of
        N + 2 (embeddings and position tables 0, layer i at i + 1, the final norm and the U-Net
        skip weights, which mix the whole stack, N + 1) learns at d^(N + 1 - k) of the rate."""
        f, num_layers = self.config.finetune, self.config.model.num_layers
        names = [str(getattr(key, "key", key)) for key in path]
        in_body = names[0] == self.init_from_subtree if self.family == "bert" else names[0] != HEAD
        if not in_body or any(n.startswith("pooler") for n in names):
            return 1.0
        if f.freeze_encoder:
            return 0.0
        if f.layer_lr_decay == 1.0 or any(n in ("final_norm", "encoder_norm", "skip_weights") for n in names):
            return 1.0
        layer = next((int(n[len("layer_"):]) for n in names if re.fullmatch(r"layer_\d+", n)), None)
        depth = 0 if layer is None else layer + 1
        return f.layer_lr_decay ** (num_layers + 1 - depth)


def logits(model, params, batch, family: str, rng, deterministic: bool):
    """The classifier's logits for a batch of rows (lm/data/rows.py's fields)."""
    rngs = None if deterministic else {"dropout": rng}
    if family == "bert":
        return model.apply({"params": params}, batch["inputs"], batch["type_ids"], batch["segment_ids"],
                           deterministic=deterministic, rngs=rngs)
    return model.apply({"params": params}, batch["inputs"], None, batch["segment_ids"], deterministic=deterministic,
                       rngs=rngs)


def tokenizer_for(config: Config, texts: list[str], kind: str):
    """init_from's tokenizer (lm/assembly.py has set tokenizer.path to it), config.tokenizer.path,
    or one trained on the training texts and cached."""
    return tokenizer_lib.load_or_train(config.tokenizer, texts, tokenizer_lib.text_identity(kind, texts),
                                       corpus_lib.cache_root(config.data))


def require_files(config: Config, objective: str) -> None:
    f = config.finetune
    if not f.train_files or not f.validation_files:
        raise ConfigError(f"train.objective={objective} reads the user's files: set finetune.train_files and "
                          f"finetune.validation_files (finetune.test_files for a held-out test split)")


@dataclasses.dataclass
class Rows:
    """Named arrays with a leading example axis; indices past the end are padding rows (all
    zeros, or `fill` per field), whose weights must be 0."""
    arrays: dict[str, np.ndarray]
    fill: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if index < len(self):
            return {k: v[index] for k, v in self.arrays.items()}
        return {k: np.full_like(v[0], self.fill.get(k, 0)) for k, v in self.arrays.items()}
