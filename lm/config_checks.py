"""Checks of a whole run configuration: values that would otherwise fail deep inside tracing or
data loading are refused here, naming the field and the fix.

The allowed values and the family of each field come from their declarations in lm/config.py
(read through lm/config_fields.py); the checks written out below relate fields to each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm import storage
from lm.config_fields import ConfigError, in_interval, lookup, schema_fields

if TYPE_CHECKING:
    from lm.config import Config, TrainConfig


def nan_steps(train: TrainConfig) -> tuple[int, ...]:
    return tuple(int(s) for s in train.inject_nan_at_steps.split(",") if s.strip())


def min_vocab_size(special_symbols: str) -> int:
    """The smallest vocabulary sentencepiece builds here for a corpus of one distinct character:
    256 byte pieces, pad/unk/bos/eos, the newline piece, the special symbols, and the character."""
    return 256 + 4 + 1 + len([s for s in special_symbols.split(",") if s.strip()]) + 1


def validate(config: Config) -> None:
    """Checks values that would otherwise fail deep inside tracing or data loading."""
    for spec in schema_fields(type(config)):
        value = lookup(config, spec.key)
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"config '{spec.key}' is {value!r}; choose one of {', '.join(spec.choices)}")
        if spec.within and not in_interval(value, spec.within):
            raise ConfigError(f"config '{spec.key}' is {value!r}; it must be a number in {spec.within} "
                              f"(default {spec.default!r})")
    m, d, t = config.model, config.data, config.train
    positive = {
        "model.num_layers": m.num_layers, "model.embed_dim": m.embed_dim, "model.num_heads": m.num_heads,
        "model.mlp_dim": m.mlp_dim, "model.max_len": m.max_len, "data.seq_len": d.seq_len,
        "train.steps": t.steps, "train.batch_size": t.batch_size, "train.microbatches": t.microbatches,
        "train.log_every_steps": t.log_every_steps, "eval.every_steps": config.eval.every_steps,
        "checkpoint.every_steps": config.checkpoint.every_steps, "checkpoint.keep": config.checkpoint.keep,
        "train.max_consecutive_nonfinite": t.max_consecutive_nonfinite, "profile.num_steps": config.profile.num_steps,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config '{name}' must be positive, got {value}")
    if config.profile.start_step < 0:
        raise ConfigError(f"config 'profile.start_step' is {config.profile.start_step}: give the first step to "
                          f"trace (1-based), or 0 for no trace")
    if m.head_dim == 0 and m.embed_dim % m.num_heads:
        raise ConfigError(
            f"model.num_heads={m.num_heads} does not divide model.embed_dim={m.embed_dim}: "
            f"pick num_heads among the divisors of {m.embed_dim} or set model.head_dim explicitly")
    kv_heads = m.num_kv_heads or m.num_heads
    if m.num_heads % kv_heads:
        raise ConfigError(
            f"model.num_kv_heads={kv_heads} must divide model.num_heads={m.num_heads} (grouped-query attention)")
    if m.positions == "rotary" and (m.head_dim or m.embed_dim // m.num_heads) % 2:
        raise ConfigError("rotary positions need an even head dimension: change model.embed_dim or model.num_heads")
    if (m.positions == "learned" or m.family == "bert") and d.seq_len > m.max_len:  # bert: always a learned table
        raise ConfigError(
            f"data.seq_len={d.seq_len} is longer than model.max_len={m.max_len}, the learned position table: "
            f"raise model.max_len or lower data.seq_len")
    if not 0.0 <= m.dropout_rate < 1.0:
        raise ConfigError(f"model.dropout_rate must be in [0, 1), got {m.dropout_rate}")
    if m.attention_impl in ("xla", "cudnn") and m.dropout_rate > 0:
        raise ConfigError(f"model.attention_impl={m.attention_impl!r} has no attention dropout, but model.dropout_rate="
                          f"{m.dropout_rate}: use model.attention_impl='einsum' (or 'auto') or set dropout_rate=0")
    if m.logit_softcap < 0:
        raise ConfigError(f"model.logit_softcap must be >= 0 (0: off), got {m.logit_softcap}")
    if m.unet_skips and m.scan_layers:
        raise ConfigError("model.unet_skips pairs each block of the second half with its mirror in the first, which "
                          "a scanned stack cannot: set model.scan_layers=false or model.unet_skips=false")
    if not 0.0 < config.optimizer.cooldown_fraction <= 1.0:
        raise ConfigError(f"optimizer.cooldown_fraction must be in (0, 1], got {config.optimizer.cooldown_fraction}")
    if m.causal_block < 0:
        raise ConfigError(f"model.causal_block must be >= 0 (0: off), got {m.causal_block}")
    if config.distill.temperature <= 0 or not 0.0 <= config.distill.alpha <= 1.0:
        raise ConfigError(f"distill.temperature must be > 0 and distill.alpha in [0, 1], got "
                          f"{config.distill.temperature} and {config.distill.alpha}")
    check_loss_chunk(config)
    _check_family(config)
    _validate_seq2seq(config)
    _validate_bert(config)
    try:
        nan_steps(t)
    except ValueError:
        raise ConfigError(f"train.inject_nan_at_steps must be comma separated step numbers, got "
                          f"{t.inject_nan_at_steps!r}") from None
    if t.batch_size % t.microbatches:
        raise ConfigError(
            f"train.microbatches={t.microbatches} does not divide train.batch_size={t.batch_size}")
    task_text = t.objective == "mlm_nsp" and config.mlm.corpus == "finetune_task"
    if not d.tfds_name and not d.train_files and not d.mixture and not task_text:
        raise ConfigError("no training data: set data.train_files (local text) or data.tfds_name (a tfds dataset)")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers={d.num_workers} must be >= 0 (0: clean and tokenize in-process)")
    if not d.validation_files and not d.tfds_name and not 0.0 < d.validation_fraction < 1.0:
        raise ConfigError(
            f"data.validation_fraction must be in (0, 1) when data.validation_files is empty, got {d.validation_fraction}")
    if config.tokenizer.path and not storage.exists(config.tokenizer.path):  # a local path or a URL
        raise ConfigError(
            f"tokenizer.path={config.tokenizer.path!r} does not exist: give an existing sentencepiece .model file "
            f"(tools/train_tokenizer.py makes one), or leave it empty to train one on the corpus")
    smallest = min_vocab_size(config.tokenizer.special_symbols)
    if not config.tokenizer.path and config.tokenizer.vocab_size < smallest:
        raise ConfigError(
            f"tokenizer.vocab_size={config.tokenizer.vocab_size} is too small: a tokenizer trained here holds 256 "
            f"byte pieces, 5 control pieces (pad, unk, bos, eos, newline), the special symbols and every character "
            f"of the corpus; use at least {smallest} (a corpus with many distinct characters needs more: "
            f"tinyshakespeare's 65 need 320)")
    for name in ("data", "fsdp", "tensor"):
        size = getattr(config.mesh, name)
        if size == 0 or size < -1:
            raise ConfigError(f"config 'mesh.{name}' must be a positive size or -1 (the rest), got {size}")
    if sum(getattr(config.mesh, n) == -1 for n in ("data", "fsdp", "tensor")) > 1:
        raise ConfigError("only one mesh axis may be -1 (the rest of the devices)")


_SEQ2SEQ_OBJECTIVES = ("span_corruption", "seq2seq", "prefix_lm", "denoise")


def check_loss_chunk(config: Config) -> None:
    """The fused head and loss serve a language model's own cross-entropy, in whole chunks."""
    chunk, objective = config.train.loss_chunk, config.train.objective
    if not chunk:
        return
    if objective not in ("causal_lm", "sft") or config.model.num_classes:
        raise ConfigError(f"train.loss_chunk={chunk} fuses a language model's output head with its loss, but "
                          f"train.objective={objective!r} (model.num_classes={config.model.num_classes}) has no such "
                          f"head: set train.loss_chunk=0")
    if config.distill.teacher_workdir:
        raise ConfigError("distillation softens the student's whole logits, which train.loss_chunk never forms: "
                          "set train.loss_chunk=0 with distill.teacher_workdir")
    if config.data.seq_len % chunk:
        raise ConfigError(f"train.loss_chunk={chunk} must divide data.seq_len={config.data.seq_len}: pick one of its "
                          f"divisors (32-128 positions are typical)")


def encoder_decoder_rows(config: Config) -> bool:
    """A T5 trained on packed encoder-decoder rows (not its encoder alone, as a classifier)."""
    return config.model.family == "t5" and config.train.objective in _SEQ2SEQ_OBJECTIVES


def _check_family(config: Config) -> None:
    """The objective fits the family, and no field read by another family only is set (it would be ignored)."""
    m, objective = config.model, config.train.objective
    families = {"mlm_nsp": ("bert",), "classification": ("bert", "gpt", "t5"),
                "token_classification": ("bert", "gpt", "t5"), "extractive_qa": ("bert", "gpt"), "sft": ("gpt",)}
    t5_objectives = (*_SEQ2SEQ_OBJECTIVES, *(o for o, fits in families.items() if "t5" in fits))
    if (objective not in t5_objectives) if m.family == "t5" else (objective in _SEQ2SEQ_OBJECTIVES):
        raise ConfigError(
            f"train.objective={objective!r} does not fit model.family={m.family!r}: the t5 family trains with "
            f"{' or '.join(t5_objectives)}, other families with causal_lm")
    if objective in families and m.family not in families[objective]:
        needed = " or ".join(f"model.family={family}" for family in families[objective])
        raise ConfigError(f"train.objective={objective} needs {needed} (got {m.family!r})")
    if m.family == "bert" and objective in ("causal_lm", "sft"):
        raise ConfigError("model.family=bert is an encoder: set train.objective to mlm_nsp, classification, "
                          "token_classification or extractive_qa")
    _check_head(config)
    if m.positions == "relative" and m.family != "t5":
        raise ConfigError("model.positions='relative' is T5's bias and needs model.family='t5'; use learned or rotary")
    specs = list(schema_fields(type(config)))
    for spec in specs:
        value = lookup(config, spec.key)
        if spec.family and spec.family != m.family and value != spec.default:
            owned = ", ".join(s.key for s in specs if s.family == spec.family)
            raise ConfigError(
                f"{spec.key}={value!r}, but {owned} are {spec.family.upper()} options, read by "
                f"model.family={spec.family!r} only: model.family={m.family!r} needs the default "
                f"{spec.key}={spec.default!r}")


def _check_head(config: Config) -> None:
    """A classifier's shape fits the objective and the family's pooling."""
    m, objective = config.model, config.train.objective
    heads = {"classification": "sequence", "token_classification": "token", "extractive_qa": "token"}
    if objective in heads and m.classify != heads[objective]:
        raise ConfigError(f"train.objective={objective} needs model.classify={heads[objective]} (got {m.classify!r})")
    if objective == "extractive_qa" and m.num_classes != 2:
        raise ConfigError(f"train.objective=extractive_qa scores a start and an end per token: set "
                          f"model.num_classes=2 (got {m.num_classes})")
    f = config.finetune
    if objective not in heads and (f.freeze_encoder or f.layer_lr_decay != 1.0):
        raise ConfigError(f"finetune.freeze_encoder and finetune.layer_lr_decay are read by classification, "
                          f"token_classification and extractive_qa only, not {objective}: drop them")
    if objective not in heads and m.classify != "sequence":
        raise ConfigError(f"model.classify={m.classify!r} is read by classification, token_classification and "
                          f"extractive_qa only: leave it at 'sequence'")
    # What pools: BERT's pooler (always built), a GPT's or a T5 encoder's sequence classifier.
    allowed = {"bert": ("cls", "mean"), "gpt": ("last", "mean"), "t5": ("mean",)}[m.family]
    pools = m.family == "bert" or (m.num_classes and m.classify == "sequence")
    if pools and m.pooling not in allowed:
        raise ConfigError(f"model.pooling={m.pooling!r} does not fit model.family={m.family!r}: use "
                          f"{' or '.join(allowed)}")


def _validate_seq2seq(config: Config) -> None:
    m, s = config.model, config.seq2seq
    if m.scale_decoder_outputs and not m.tie_embeddings:
        raise ConfigError("model.scale_decoder_outputs=true scales the input of the tied output projection: set "
                          "model.tie_embeddings=true or model.scale_decoder_outputs=false")
    if m.family == "t5" and m.positions == "learned":
        raise ConfigError("the t5 family has no learned position table: set model.positions to relative or rotary")
    if m.num_decoder_layers < 0 or m.relative_buckets < 4 or m.relative_max_distance < m.relative_buckets // 2:
        raise ConfigError("model.num_decoder_layers must be >= 0, model.relative_buckets >= 4 and "
                          "model.relative_max_distance >= relative_buckets / 2")
    if s.input_len < 2 or s.target_len < 2 or s.beam_size < 1:
        raise ConfigError("seq2seq.input_len and seq2seq.target_len must be at least 2 and seq2seq.beam_size at least 1")
    if not 0.0 < s.noise_density < 1.0 or s.mean_noise_span_length < 1.0:
        raise ConfigError(f"seq2seq.noise_density must be in (0, 1) and seq2seq.mean_noise_span_length >= 1, got "
                          f"{s.noise_density} and {s.mean_noise_span_length}")


def _validate_bert(config: Config) -> None:
    """The encoder objectives and the BERT family go together; their knobs must make sense."""
    m, objective = config.model, config.train.objective
    if objective == "mlm_nsp" and m.num_classes:
        raise ConfigError(f"train.objective=mlm_nsp uses the MLM and NSP heads: set model.num_classes=0 "
                          f"(got {m.num_classes})")
    if objective in ("classification", "token_classification", "extractive_qa") and m.num_classes < 2:
        raise ConfigError(f"train.objective={objective} needs model.num_classes >= 2 (got {m.num_classes}); for "
                          f"the user's own labels, the number of distinct labels in finetune.train_files")
    mlm = config.mlm
    if not 0.0 < mlm.mask_rate < 1.0 or mlm.max_predictions <= 0:
        raise ConfigError(f"mlm.mask_rate must be in (0, 1) and mlm.max_predictions positive, got "
                          f"{mlm.mask_rate} and {mlm.max_predictions}")
    if min(mlm.mask_token_fraction, mlm.random_token_fraction) < 0 or \
            mlm.mask_token_fraction + mlm.random_token_fraction > 1.0:
        raise ConfigError("mlm.mask_token_fraction and mlm.random_token_fraction must be >= 0 and sum to at most 1")
    if config.data.lowercase and objective not in ("mlm_nsp", "classification", "token_classification"):
        raise ConfigError(f"data.lowercase is read by train.objective=mlm_nsp, classification and "
                          f"token_classification only, not "
                          f"{objective}: lowercase the corpus files instead, or drop data.lowercase")
    if not 0.0 < config.finetune.layer_lr_decay <= 1.0:
        raise ConfigError(f"finetune.layer_lr_decay must be in (0, 1] (1.0: off), got {config.finetune.layer_lr_decay}")
    if config.finetune.layer_lr_decay < 1.0 and m.scan_layers:
        raise ConfigError("finetune.layer_lr_decay tells layers apart by their layer_<i> names, which a scanned stack "
                          "does not have: set model.scan_layers=false to use it")
    if m.family == "bert" and m.positions != "learned":
        raise ConfigError(f"model.family=bert uses a learned position table: set model.positions='learned' "
                          f"(got {m.positions!r})")
    if not 0.0 < config.finetune.init_shrink <= 1.0 or config.finetune.init_perturb < 0.0:
        raise ConfigError(f"finetune.init_shrink must be in (0, 1] and finetune.init_perturb >= 0 (1.0 and 0.0: the "
                          f"pretrained params as they are), got {config.finetune.init_shrink} and "
                          f"{config.finetune.init_perturb}")
