"""Typed, frozen run configuration.

Every config key a run may set is declared here, once, as a dataclass field with a
default. `configs/base.py` turns these defaults into the ml-collections ConfigDict that
`tools/train.py` exposes as `--config.<section>.<field>` flags; `from_config_dict` turns
the (possibly overridden) ConfigDict back into these frozen objects and checks them, so
library code never reads an undeclared key and bad values fail before any compile.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config value is wrong. The message names the field and how to fix it."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str = "gpt"  # gpt (decoder-only causal LM) | bert (bidirectional encoder) | t5 (encoder-decoder)
    vocab_size: int = 0  # 0: take it from the tokenizer.
    num_layers: int = 4
    embed_dim: int = 256
    num_heads: int = 4
    num_kv_heads: int = 0  # 0: same as num_heads (multi-head); fewer: grouped-query.
    head_dim: int = 0  # 0: embed_dim // num_heads.
    mlp_dim: int = 1024
    mlp_activation: str = "gelu"  # gelu (tanh approximation) | gelu_exact (erf, HF BERT's) | swiglu | relu (T5.1.0)
    max_len: int = 256  # longest sequence (size of the learned position table).
    positions: str = "learned"  # learned | rotary | relative (T5's bucketed bias; t5 family only)
    rope_theta: float = 10000.0
    norm: str = "layernorm"  # layernorm | rmsnorm (pre-norm; bert may set norm_position)
    norm_eps: float = 1e-5
    use_bias: bool = True
    tie_embeddings: bool = True
    dropout_rate: float = 0.0
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype; matmuls accumulate in float32.
    scan_layers: bool = False  # nn.scan over layers: compile time flat in depth.
    remat: str = "none"  # none | full | save_dots
    num_decoder_layers: int = 0  # t5: decoder depth; 0: num_layers.
    relative_buckets: int = 32  # positions="relative": buckets of the learned bias per head ...
    relative_max_distance: int = 128  # ... log-spaced up to this distance (farther shares the last bucket).
    # Attention kernel (lm/layers.py): einsum = our heads-major einsums (fastest on XLA:CPU, see
    # docs/performance.md); xla | cudnn = jax.nn.dot_product_attention with that implementation
    # (cudnn: flash attention on NVIDIA GPUs, bfloat16); auto = cudnn on GPU in bfloat16, else einsum.
    attention_impl: str = "auto"
    # einsum path, causal self-attention: each block of this many queries is scored only against
    # the keys up to its end, skipping fully masked key blocks (0: one block, the dense path).
    causal_block: int = 64
    type_vocab_size: int = 2  # bert: token-type (segment A/B) embeddings.
    num_classes: int = 0  # bert: 0 = pretraining heads (MLM + NSP); >= 2 = a classifier on the pooled output.
    pooling: str = "cls"  # bert: what the pooler reads: cls (the first token, BERT's) | mean (over real tokens)
    # bert: where each block's norms sit. pre (ours): x + f(norm(x)), then a final norm; post (the
    # original BERT's, so HF checkpoints convert): norm(x + f(x)), no final norm.
    norm_position: str = "pre"
    embedding_norm: bool = False  # bert: a norm over the summed embeddings (the original BERT has one).
    # t5: how params start. normal: std 0.02, residual output projections scaled down by depth
    # (GPT-2's). fan_in: T5's (Mesh TensorFlow) scheme, embeddings with std 1 and every kernel
    # with std 1/sqrt(fan_in), so activations start at unit scale (docs/t5.md).
    init: str = "normal"
    # t5, tied embeddings: multiply the decoder output by embed_dim**-0.5 before the output
    # projection (T5 v1.0's `scale_decoder_outputs`); it goes with init="fan_in".
    scale_decoder_outputs: bool = False
    # bert pretraining: what the next-sentence head reads. pooled (BERT's): the pooled [CLS] vector;
    # pooled_and_overlap: that plus a learned-weight soft overlap of B's token states with A's
    # (docs/bert.md: with the pooled vector alone NSP stayed at chance at our scale).
    nsp_head: str = "pooled"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # A local text corpus (files or globs, comma separated) ...
    train_files: str = "data/tinyshakespeare/input.txt"
    validation_files: str = ""  # empty: hold out the last `validation_fraction` of the text.
    validation_fraction: float = 0.1
    document_unit: str = "file"  # file | paragraph (blank-line separated)
    # ... or a registered tfds dataset, for example "lm1b" or "c4/en" (overrides the files).
    tfds_name: str = ""
    tfds_data_dir: str = ""  # empty: $TFDS_DATA_DIR or ~/tensorflow_datasets
    text_key: str = "text"
    train_split: str = "train"
    eval_split: str = "validation"
    allow_download: bool = False  # a tfds dataset that is not prepared is an error unless set.
    seq_len: int = 128
    cache_dir: str = ""  # empty: $LM_CACHE_DIR or ~/.cache/lm
    seed: int = 0
    prefetch: int = 4  # batches prepared ahead by background threads.
    lowercase: bool = False  # lowercase all text before tokenizing (an uncased model); mlm_nsp and classification.
    # Streaming input (lm/data/streaming.py, docs/data.md): documents are read, cleaned, tokenized
    # and packed on the fly, with no pre-pass over the corpus. Off by default: on the small shipped
    # corpora the pre-pass costs seconds and gives exact epochs (every token a target once).
    streaming: bool = False
    num_workers: int = 0  # streaming: grain worker processes that clean and tokenize; 0: in-process.
    # Weighted sources, "name:spec:weight,..."; spec is a file glob or tfds:<name> (docs/data.md).
    # A mixture always streams; it replaces train_files / tfds_name.
    mixture: str = ""
    # Where relative data paths are looked up after the working directory and the repository;
    # empty: $LM_DATA_DIR. Fine-tuning tasks read <data_dir>/<task> unless finetune.data_dir is set.
    data_dir: str = ""


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    path: str = ""  # an existing sentencepiece .model; empty: train one on the corpus (cached).
    vocab_size: int = 1024
    model_type: str = "bpe"  # bpe | unigram
    special_symbols: str = ""  # comma separated extra pieces, e.g. "[CLS],[SEP],[MASK]"


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"  # sgd | adam | adamw | adagrad | adafactor | lion
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # constant | linear | cosine | rsqrt (each after linear warm-up)
    warmup_steps: int = 100
    decay_steps: int = 0  # 0: train.steps
    end_learning_rate_fraction: float = 0.1
    weight_decay: float = 0.1  # decoupled; never applied to norms and biases.
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    grad_clip_norm: float = 1.0  # 0: off


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    objective: str = "causal_lm"  # what the run trains for (lm/tasks), one of _CHOICES["train.objective"]
    steps: int = 1000
    batch_size: int = 32  # global, across all devices and hosts.
    microbatches: int = 1  # gradient accumulation: batch_size is split into this many.
    seed: int = 0
    z_loss: float = 0.0
    log_every_steps: int = 50
    early_stopping_patience: int = 0  # evaluations without improvement; 0: off.
    sample_prompt: str = "ROMEO:"
    sample_tokens: int = 120
    sample_temperature: float = 0.8
    # A step whose loss, gradient norm or updated parameters are NaN/Inf never changes the state.
    nonfinite: str = "skip"  # skip: count it and go on | stop: stop the run at the first one.
    max_consecutive_nonfinite: int = 5  # skip mode: stop after this many in a row.
    inject_nan_at_steps: str = ""  # testing only: comma separated steps whose loss is made NaN.


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 250
    batch_size: int = 0  # 0: train.batch_size
    max_batches: int = 0  # 0: the whole validation split


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 250
    keep: int = 2  # newest checkpoints kept ...
    keep_best: bool = True  # ... plus the best by validation loss.
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    # Sizes of the named mesh axes; -1 means "the rest of the devices".
    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    # Knowledge distillation (lm/distill.py): a trained workdir with the same tokenizer teaches
    # this run's model. loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy.
    teacher_workdir: str = ""  # empty: no teacher (ordinary training).
    teacher_step: int = 0  # 0: the teacher's newest checkpoint.
    temperature: float = 2.0
    alpha: float = 0.5


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    # Encoder-decoder tasks (lm/tasks/seq2seq.py, span_corruption.py). Local pairs come from
    # data.train_files / data.validation_files / test_files: JSON lines with input_key and
    # target_key, or parallel text files named with a "{key}" placeholder (e.g.
    # "multi30k/train.{key}.gz", one example a line, .gz read as gzip); a tfds dataset
    # (data.tfds_name) gives its features input_key and target_key.
    input_key: str = "inputs"
    target_key: str = "targets"
    input_prefix: str = ""  # prepended to every input, e.g. "translate English to German: "
    test_files: str = ""  # local files for tools/evaluate.py --split=test
    # The test split's reference fields when they are not target_key, comma separated (DialogSum's test file:
    # "summary1,summary2,summary3"): BLEU and ROUGE score against all of them; the first is the target.
    test_reference_keys: str = ""
    input_len: int = 128  # encoder tokens per row (longer inputs are truncated)
    target_len: int = 64  # decoder tokens per row; span corruption derives its own from input_len
    noise_density: float = 0.15  # span corruption: fraction of tokens masked ...
    mean_noise_span_length: float = 3.0  # ... in spans of this mean length
    beam_size: int = 1  # decoding (samples, tools/evaluate.py): 1 is greedy
    length_penalty: float = 0.6  # beam search: score / ((5 + length) / 6) ** length_penalty


@dataclasses.dataclass(frozen=True)
class MlmConfig:
    # Masked-LM + next-sentence pretraining (train.objective=mlm_nsp, lm/tasks/mlm_nsp.py).
    document_boundary: str = "heading"  # heading: WikiText ` = Title = ` lines start articles | paragraph: blank lines
    mask_rate: float = 0.15  # share of a pair's tokens selected for prediction ...
    mask_token_fraction: float = 0.8  # ... of which this share becomes [MASK],
    random_token_fraction: float = 0.1  # this share a random piece, and the rest stays unchanged.
    max_predictions: int = 20  # masked positions per example the MLM head scores (static shape).
    short_pair_rate: float = 0.1  # pairs made shorter than data.seq_len, so short inputs are seen too.
    nsp_weight: float = 1.0  # loss = MLM loss + nsp_weight * NSP loss.
    # files: documents from data.train_files | finetune_task: finetune.task's own training inputs, labels
    # dropped (task-adaptive pretraining: continue a pretrained encoder's MLM on the task's text).
    corpus: str = "files"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    # Sentence classification on a pretrained encoder (train.objective=classification, lm/tasks/classification.py).
    task: str = "sst2"  # sst2 | mrpc | rte
    data_dir: str = ""  # folder with the task's files; empty: ../shared/data/<task> beside the repository.
    tfds_name: str = ""  # e.g. "glue/sst2": read from tfds instead (needs the dataset prepared or allow_download).
    select_metric: str = "accuracy"  # validation metric for early stopping and the best checkpoint (higher is better).
    freeze_encoder: bool = False  # train the head (and pooler) only.
    layer_lr_decay: float = 1.0  # layer-wise learning-rate decay: layer i of N gets decay^(N - i); 1.0: off.
    init_checkpoint: str = "best"  # init_from a workdir: its best (by validation loss) or latest checkpoint.
    # init_from: shrink and perturb (Ash & Adams, 2020). Each pretrained matrix it takes (all, or the task's
    # subtree: BERT's encoder) starts as init_shrink * pretrained + init_perturb * a fresh init (norm
    # scales and biases stay as trained). 1.0 and 0.0: the pretrained params unchanged.
    init_shrink: float = 1.0
    init_perturb: float = 0.0


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    mesh: MeshConfig = MeshConfig()
    distill: DistillConfig = DistillConfig()
    seq2seq: Seq2SeqConfig = Seq2SeqConfig()
    mlm: MlmConfig = MlmConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    # Start from the params of a trained run (lm/init_from.py): a workdir (its best or latest
    # checkpoint, finetune.init_checkpoint) or one of its checkpoints (<workdir>/checkpoints/<step>);
    # empty: from scratch. Ignored on resume. A classifier takes only the encoder (its head starts
    # fresh); other objectives take every parameter.
    init_from: str = ""


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _build(cls, values: Mapping[str, Any], prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(sorted(fields))}"
        raise ConfigError(f"unknown config key '{prefix}{key}': {hint}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{prefix}{name}.")
            continue
        kwargs[name] = _coerce(value, default, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value, default, name):
    """Accepts ints for float fields; anything else must have the declared type."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config '{name}' must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, type(default)):
        raise ConfigError(
            f"config '{name}' must be of type {type(default).__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_config_dict(config_dict) -> Config:
    """Converts a (nested) ConfigDict or dict into a checked, frozen Config."""
    values = config_dict.to_dict() if hasattr(config_dict, "to_dict") else dict(config_dict)
    config = _build(Config, values, "")
    validate(config)
    return config


_CHOICES = {
    "model.family": ("gpt", "bert", "t5"),
    "model.mlp_activation": ("gelu", "gelu_exact", "swiglu", "relu"),
    "model.positions": ("learned", "rotary", "relative"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "save_dots"),
    "model.attention_impl": ("auto", "einsum", "xla", "cudnn"),
    "data.document_unit": ("file", "paragraph"),
    "tokenizer.model_type": ("bpe", "unigram"),
    "optimizer.name": ("sgd", "adam", "adamw", "adagrad", "adafactor", "lion"),
    "optimizer.schedule": ("constant", "linear", "cosine", "rsqrt"),
    "train.nonfinite": ("skip", "stop"),
    "train.objective": ("causal_lm", "mlm_nsp", "classification", "span_corruption", "seq2seq", "prefix_lm", "denoise"),
    "model.pooling": ("cls", "mean"),
    "model.nsp_head": ("pooled", "pooled_and_overlap"),
    "model.norm_position": ("pre", "post"),
    "model.init": ("normal", "fan_in"),
    "mlm.document_boundary": ("heading", "paragraph"),
    "mlm.corpus": ("files", "finetune_task"),
    "finetune.task": ("sst2", "mrpc", "rte"),
    "finetune.select_metric": ("accuracy", "f1", "precision", "recall"),
    "finetune.init_checkpoint": ("best", "latest"),
}


def nan_steps(train: TrainConfig) -> tuple[int, ...]:
    return tuple(int(s) for s in train.inject_nan_at_steps.split(",") if s.strip())


def _get(config: Config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def validate(config: Config) -> None:
    """Checks values that would otherwise fail deep inside tracing or data loading."""
    for name, choices in _CHOICES.items():
        value = _get(config, name)
        if value not in choices:
            raise ConfigError(f"config '{name}' is {value!r}; choose one of {', '.join(choices)}")
    m, d, t = config.model, config.data, config.train
    positive = {
        "model.num_layers": m.num_layers, "model.embed_dim": m.embed_dim, "model.num_heads": m.num_heads,
        "model.mlp_dim": m.mlp_dim, "model.max_len": m.max_len, "data.seq_len": d.seq_len,
        "train.steps": t.steps, "train.batch_size": t.batch_size, "train.microbatches": t.microbatches,
        "train.log_every_steps": t.log_every_steps, "eval.every_steps": config.eval.every_steps,
        "checkpoint.every_steps": config.checkpoint.every_steps, "checkpoint.keep": config.checkpoint.keep,
        "train.max_consecutive_nonfinite": t.max_consecutive_nonfinite,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config '{name}' must be positive, got {value}")
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
    if m.causal_block < 0:
        raise ConfigError(f"model.causal_block must be >= 0 (0: off), got {m.causal_block}")
    if config.distill.temperature <= 0 or not 0.0 <= config.distill.alpha <= 1.0:
        raise ConfigError(f"distill.temperature must be > 0 and distill.alpha in [0, 1], got "
                          f"{config.distill.temperature} and {config.distill.alpha}")
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
    if config.tokenizer.path and not os.path.exists(config.tokenizer.path):
        raise ConfigError(
            f"tokenizer.path={config.tokenizer.path!r} does not exist: give an existing sentencepiece .model file "
            f"(tools/train_tokenizer.py makes one), or leave it empty to train one on the corpus")
    if not config.tokenizer.path and config.tokenizer.vocab_size < 260:
        raise ConfigError(
            f"tokenizer.vocab_size={config.tokenizer.vocab_size} is too small: the tokenizer needs 256 byte pieces "
            f"plus its control tokens; use at least 260")
    for name in ("data", "fsdp", "tensor"):
        size = getattr(config.mesh, name)
        if size == 0 or size < -1:
            raise ConfigError(f"config 'mesh.{name}' must be a positive size or -1 (the rest), got {size}")
    if sum(getattr(config.mesh, n) == -1 for n in ("data", "fsdp", "tensor")) > 1:
        raise ConfigError("only one mesh axis may be -1 (the rest of the devices)")


_SEQ2SEQ_OBJECTIVES = ("span_corruption", "seq2seq", "prefix_lm", "denoise")


def _validate_seq2seq(config: Config) -> None:
    m, s, objective = config.model, config.seq2seq, config.train.objective
    if (m.family == "t5") != (objective in _SEQ2SEQ_OBJECTIVES):
        raise ConfigError(
            f"train.objective={objective!r} does not fit model.family={m.family!r}: the t5 family trains with "
            f"{' or '.join(_SEQ2SEQ_OBJECTIVES)}, other families with causal_lm")
    if m.positions == "relative" and m.family != "t5":
        raise ConfigError("model.positions='relative' is T5's bias and needs model.family='t5'; use learned or rotary")
    if m.family != "t5" and (m.init != "normal" or m.scale_decoder_outputs):
        raise ConfigError(f"model.init={m.init!r} and model.scale_decoder_outputs={m.scale_decoder_outputs} are "
                          f"T5 options: model.family={m.family!r} needs model.init='normal' and "
                          f"model.scale_decoder_outputs=false")
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
    if objective in ("mlm_nsp", "classification") and m.family != "bert":
        raise ConfigError(f"train.objective={objective} needs model.family=bert (got {m.family!r})")
    if m.family == "bert" and objective == "causal_lm":
        raise ConfigError("model.family=bert is an encoder: set train.objective to mlm_nsp or classification")
    if m.family != "bert" and (m.norm_position != "pre" or m.embedding_norm):
        raise ConfigError(f"model.norm_position={m.norm_position!r} and model.embedding_norm={m.embedding_norm} are "
                          f"BERT options (post-norm, as Hugging Face's BERT): model.family={m.family!r} is pre-norm "
                          f"only; set model.norm_position='pre' and model.embedding_norm=false")
    if objective == "mlm_nsp" and m.num_classes:
        raise ConfigError(f"train.objective=mlm_nsp uses the MLM and NSP heads: set model.num_classes=0 "
                          f"(got {m.num_classes})")
    if objective == "classification" and m.num_classes < 2:
        raise ConfigError(f"train.objective=classification needs model.num_classes >= 2 (got {m.num_classes})")
    mlm = config.mlm
    if not 0.0 < mlm.mask_rate < 1.0 or mlm.max_predictions <= 0:
        raise ConfigError(f"mlm.mask_rate must be in (0, 1) and mlm.max_predictions positive, got "
                          f"{mlm.mask_rate} and {mlm.max_predictions}")
    if min(mlm.mask_token_fraction, mlm.random_token_fraction) < 0 or \
            mlm.mask_token_fraction + mlm.random_token_fraction > 1.0:
        raise ConfigError("mlm.mask_token_fraction and mlm.random_token_fraction must be >= 0 and sum to at most 1")
    if config.data.lowercase and objective not in ("mlm_nsp", "classification"):
        raise ConfigError(f"data.lowercase is read by train.objective=mlm_nsp and classification only, not "
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
