"""Typed, frozen run configuration: the schema.

Every config key a run may set is declared here, once, as a dataclass field made by
`setting(default, doc, choices=..., family=..., guarded=...)` (lm/config_fields.py). The
checks (lm/config_checks.py), the resume guard (lm/workdir.py) and docs/config.md
(lm/config_docs.py) read those declarations; none keeps its own list of values or keys.
`configs/base.py` turns the defaults into the ml-collections ConfigDict that `tools/train.py`
exposes as `--config.<section>.<field>` flags; `from_config_dict` turns the (possibly
overridden) ConfigDict back into these frozen objects and checks them, so library code never
reads an undeclared key and bad values fail before any compile.

Each section's `guarded_on_resume` says whether resuming a workdir may change its fields
(guarded: no, the checkpoints would mean something else); a field may say otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from lm.config_checks import nan_steps, validate
from lm.config_fields import ConfigError, build, schema_fields, setting
from lm.config_objectives import DistillConfig, FinetuneConfig, MlmConfig, Seq2SeqConfig

__all__ = [
    "CheckpointConfig", "Config", "ConfigError", "DataConfig", "DistillConfig", "EvalConfig", "FinetuneConfig",
    "LoggingConfig", "MeshConfig", "MlmConfig", "ModelConfig", "OptimizerConfig", "ProfileConfig", "Seq2SeqConfig",
    "TokenizerConfig", "TrainConfig",
    "from_config_dict", "guarded_keys", "is_guarded", "nan_steps", "to_dict", "validate",
]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    guarded_on_resume: ClassVar[bool] = True  # the checkpoint's parameters are this model's

    family: str = setting("gpt", "the architecture.", choices={
        "gpt": "decoder-only causal LM", "bert": "bidirectional encoder", "t5": "encoder-decoder"})
    vocab_size: int = setting(0, "token embeddings and output logits; 0: take it from the tokenizer.")
    num_layers: int = setting(4, "transformer blocks (t5: encoder blocks).")
    embed_dim: int = setting(256, "width of the residual stream.")
    num_heads: int = setting(4, "attention (query) heads per block.")
    num_kv_heads: int = setting(0, "key/value heads; 0: same as num_heads (multi-head); fewer: grouped-query.")
    head_dim: int = setting(0, "width of each head; 0: embed_dim // num_heads.")
    mlp_dim: int = setting(1024, "hidden width of each block's MLP.")
    mlp_activation: str = setting("gelu", "the MLP's nonlinearity.", choices={
        "gelu": "tanh approximation", "gelu_exact": "erf, HF BERT's", "swiglu": "gated, with a third matrix",
        "relu": "T5.1.0's", "relu_squared": "relu(x)^2 (Primer; the speedrun recipes')"})
    max_len: int = setting(256, "longest sequence (size of the learned position table).")
    positions: str = setting("learned", "how attention knows token positions.", choices={
        "learned": "an added position table", "rotary": "RoPE on queries and keys",
        "relative": "T5's bucketed bias; t5 family only"})
    rope_theta: float = setting(10000.0, "positions='rotary': base of the rotation frequencies.", within="(0, inf)")
    norm: str = setting("layernorm", "the normalization layer (pre-norm; bert may set norm_position).",
                        choices=("layernorm", "rmsnorm"))
    norm_eps: float = setting(1e-5, "epsilon inside every norm.", within="(0, inf)")
    use_bias: bool = setting(True, "dense layers and norms have biases.")
    tie_embeddings: bool = setting(True, "the output projection is the transposed token embedding.")
    qk_norm: bool = setting(False, "RMS-normalise each head's queries and keys (learned scale per head dim) before "
                                   "rotary and the dot product: bounded attention logits, stable at higher rates.")
    zero_init_outputs: bool = setting(False, "the projections back into the residual stream (attention out, MLP wo) "
                                             "and an untied output head start at zero: every block starts as the "
                                             "identity.")
    dropout_rate: float = setting(0.0, "dropout on attention probabilities and residual branches, in [0, 1).")
    param_dtype: str = setting("float32", "dtype the parameters are stored in.", choices=("float32", "bfloat16"))
    dtype: str = setting("float32", "compute dtype; matmuls accumulate in float32.", choices=("float32", "bfloat16"))
    scan_layers: bool = setting(False, "nn.scan over layers: compile time flat in depth.")
    remat: str = setting("none", "what the backward pass recomputes instead of storing.", choices={
        "none": "store every activation", "full": "recompute each block", "save_dots": "keep only matmul outputs"})
    attention_impl: str = setting("auto", "attention kernel (lm/layers.py).", choices={
        "auto": "cudnn on GPU in bfloat16, else einsum",
        "einsum": "our heads-major einsums (fastest on XLA:CPU, see docs/performance.md)",
        "xla": "jax.nn.dot_product_attention, XLA implementation",
        "cudnn": "jax.nn.dot_product_attention, flash attention on NVIDIA GPUs (bfloat16)"})
    causal_block: int = setting(64, "einsum path, causal self-attention: each block of this many queries is scored "
                                    "only against the keys up to its end, skipping fully masked key blocks "
                                    "(0: one block, the dense path).")
    num_classes: int = setting(0, "0: the family's pretraining heads; >= 2: a classifier with this many classes "
                                  "(train.objective=classification).")
    classify: str = setting("sequence", "what a classifier (num_classes >= 2) labels.", choices={
        "sequence": "each row, from its pooled states (train.objective=classification)",
        "token": "each token (token_classification's tags; extractive_qa's start and end, num_classes=2)"})

    # Read by the gpt family only; other families must leave the defaults (checked).
    logit_softcap: float = setting(0.0, "cap * tanh(logits / cap) on the output logits (Gemma 2's soft-capping); "
                                        "0: off.", family="gpt")
    unet_skips: bool = setting(False, "U-net skips across layers: each block of the second half first adds the "
                                      "output of its mirror block in the first half, times a learned weight "
                                      "(starting at 1); needs scan_layers=false.", family="gpt")

    # Read by the bert family only; other families must leave the defaults (checked).
    type_vocab_size: int = setting(2, "token-type (segment A/B) embeddings.", family="bert")
    pooling: str = setting("cls", "what a sequence classifier pools.", choices={
        "cls": "the first token, BERT's [CLS] (bert)", "mean": "the mean over real tokens (bert, gpt, t5)",
        "last": "the last real token, the one that has seen the whole text (gpt)"})
    norm_position: str = setting("pre", "where each block's norms sit.", family="bert", choices={
        "pre": "ours: x + f(norm(x)), then a final norm",
        "post": "the original BERT's, so HF checkpoints convert: norm(x + f(x)), no final norm"})
    embedding_norm: bool = setting(False, "a norm over the summed embeddings (the original BERT has one).",
                                   family="bert")
    nsp_head: str = setting("pooled", "pretraining: what the next-sentence head reads (docs/bert.md: with the "
                                      "pooled vector alone NSP stayed at chance at our scale).", family="bert",
                            choices={
        "pooled": "BERT's: the pooled [CLS] vector",
        "pooled_and_overlap": "that plus a learned-weight soft overlap of B's token states with A's"})

    # Read by the t5 family only; other families must leave the defaults (checked).
    num_decoder_layers: int = setting(0, "decoder depth; 0: num_layers.", family="t5")
    relative_buckets: int = setting(32, "positions='relative': buckets of the learned bias per head, log-spaced "
                                        "up to relative_max_distance.", family="t5")
    relative_max_distance: int = setting(128, "positions='relative': farther offsets share the last bucket.",
                                         family="t5")
    init: str = setting("normal", "how params start (docs/t5.md).", family="t5", choices={
        "normal": "std 0.02, residual output projections scaled down by depth (GPT-2's)",
        "fan_in": "T5's (Mesh TensorFlow): embeddings with std 1, every kernel with std 1/sqrt(fan_in), so "
                  "activations start at unit scale"})
    scale_decoder_outputs: bool = setting(False, "tied embeddings: multiply the decoder output by embed_dim**-0.5 "
                                                 "before the output projection (T5 v1.0's); goes with init='fan_in'.",
                                          family="t5")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    guarded_on_resume: ClassVar[bool] = True  # what the model is trained on; the exceptions only say where or how fast

    train_files: str = setting("data/tinyshakespeare/input.txt",
                               "a local text corpus: files or globs, comma separated (data.tfds_name overrides).")
    validation_files: str = setting("", "empty: hold out the last `validation_fraction` of the text.")
    validation_fraction: float = setting(0.1, "share of the text held out when validation_files is empty.")
    document_unit: str = setting("file", "what one document is in the local files.", choices={
        "file": "a whole file", "paragraph": "blank-line separated"})
    tfds_name: str = setting("", "a registered tfds dataset, for example \"lm1b\" or \"c4/en\" (overrides the files).")
    tfds_data_dir: str = setting("", "empty: $TFDS_DATA_DIR or ~/tensorflow_datasets", guarded=False)
    text_key: str = setting("text", "the tfds feature holding the text.")
    train_split: str = setting("train", "the tfds split trained on.")
    eval_split: str = setting("validation", "the tfds split evaluated on.")
    allow_download: bool = setting(False, "a tfds dataset that is not prepared is an error unless set.", guarded=False)
    seq_len: int = setting(128, "tokens per training row.")
    cache_dir: str = setting("", "empty: $LM_CACHE_DIR or ~/.cache/lm", guarded=False)
    seed: int = setting(0, "seed of the data order.")
    prefetch: int = setting(4, "batches prepared ahead by background threads.", guarded=False)
    lowercase: bool = setting(False, "lowercase all text before tokenizing (an uncased model); mlm_nsp and "
                                     "classification.")
    streaming: bool = setting(False, "read, clean, tokenize and pack documents while training runs, with no "
                                     "pre-pass over the corpus (docs/data.md). Off by default: on the small shipped "
                                     "corpora the pre-pass takes seconds and gives exact epochs.")
    num_workers: int = setting(0, "streaming: grain worker processes that clean and tokenize; 0: in-process.",
                               guarded=False)
    mixture: str = setting("", "weighted sources \"name:spec:weight,...\", spec a file glob or tfds:<name> "
                               "(docs/data.md); a mixture always streams and replaces train_files / tfds_name.")
    data_dir: str = setting("", "the folder relative data paths are also looked up in (after the working directory "
                                "and the repository); empty: $LM_DATA_DIR.", guarded=False)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    guarded_on_resume: ClassVar[bool] = True  # token ids are what the embeddings were trained on

    path: str = setting("", "an existing sentencepiece .model; empty: train one on the corpus (cached).")
    vocab_size: int = setting(1024, "pieces of a tokenizer trained on the corpus.")
    model_type: str = setting("bpe", "sentencepiece algorithm of a tokenizer trained on the corpus.",
                              choices=("bpe", "unigram"))
    special_symbols: str = setting("", "comma separated extra pieces, e.g. \"[CLS],[SEP],[MASK]\"")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    guarded_on_resume: ClassVar[bool] = False

    name: str = setting("adamw", "the optax optimizer.", choices={
        "sgd": "", "adam": "", "adamw": "", "adagrad": "", "adafactor": "", "lion": "",
        "muon": "Muon (optax.contrib: Nesterov momentum orthogonalised by Newton-Schulz) for the hidden matrices "
                "(attention and MLP kernels) at muon_learning_rate; AdamW at learning_rate for embeddings, output "
                "head, norms, biases and scalars"})
    learning_rate: float = setting(1e-3, "peak learning rate.", within="[0, inf)")
    schedule: str = setting("cosine", "learning-rate schedule, each after linear warm-up.", choices={
        "constant": "", "linear": "", "cosine": "", "rsqrt": "",
        "wsd": "warmup-stable-decay: the peak until the last cooldown_fraction of the steps, then linear to "
               "end_learning_rate_fraction"})
    warmup_steps: int = setting(100, "steps of linear warm-up from 0.", within="[0, inf)")
    decay_steps: int = setting(0, "steps the schedule decays over; 0: train.steps", within="[0, inf)")
    end_learning_rate_fraction: float = setting(0.1, "linear, cosine and wsd end at this share of the peak.")
    cooldown_fraction: float = setting(0.2, "schedule='wsd': share of the steps (of decay_steps, or train.steps) "
                                            "over which the rate falls, at the end.")
    weight_decay: float = setting(0.1, "decoupled; never applied to norms and biases.", within="[0, inf)")
    b1: float = setting(0.9, "adam-style first-moment decay.", within="[0, 1)")
    b2: float = setting(0.95, "adam-style second-moment decay.", within="[0, 1)")
    eps: float = setting(1e-8, "adam-style denominator epsilon.", within="[0, inf)")
    momentum: float = setting(0.9, "sgd only", within="[0, 1)")
    muon_learning_rate: float = setting(0.02, "name='muon': peak learning rate of the hidden matrices (the schedule "
                                              "scales it as it scales learning_rate).")
    muon_momentum: float = setting(0.95, "name='muon': momentum of the orthogonalised updates.")
    grad_clip_norm: float = setting(1.0, "clip the global gradient norm to this; 0: off", within="[0, inf)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    guarded_on_resume: ClassVar[bool] = False

    objective: str = setting("causal_lm", "what the run trains for (lm/tasks).", guarded=True, choices={
        "causal_lm": "next-token prediction (gpt)", "mlm_nsp": "masked LM + next sentence (bert)",
        "classification": "sentence classification (bert, finetune.*)", "span_corruption": "T5 pretraining (t5)",
        "seq2seq": "input -> target pairs (t5, seq2seq.*)", "prefix_lm": "continue a text's prefix (t5)",
        "denoise": "span corruption's inputs, the whole window as target (t5)",
        "token_classification": "a tag per word, BIO entities (gpt, bert; finetune.*)",
        "extractive_qa": "answer spans of SQuAD-format data (gpt, bert; finetune.*)",
        "sft": "prompt -> response, the loss on the response (gpt; finetune.*)"})
    steps: int = setting(1000, "optimizer steps of the whole run.")
    batch_size: int = setting(32, "global, across all devices and hosts.", guarded=True)
    microbatches: int = setting(1, "gradient accumulation: batch_size is split into this many.")
    seed: int = setting(0, "seed of the parameter init and the step's randomness.", guarded=True)
    z_loss: float = setting(0.0, "weight of the squared log-partition penalty on the logits.", within="[0, inf)")
    loss_chunk: int = setting(0, "causal_lm/sft: compute the output head and the cross-entropy together, this many "
                                 "positions at a time, never holding the [B, L, V] logits (lm/fused_loss.py); "
                                 "0: whole logits.", within="[0, inf)")
    log_every_steps: int = setting(50, "steps between metric logs.")
    early_stopping_patience: int = setting(0, "evaluations without improvement; 0: off.", within="[0, inf)")
    sample_prompt: str = setting("ROMEO:", "prompt of the samples written at the end of a causal_lm run.")
    sample_tokens: int = setting(120, "tokens per sample.", within="[0, inf)")
    sample_temperature: float = setting(0.8, "sampling temperature; 0: greedy.", within="[0, inf)")
    nonfinite: str = setting("skip", "a step whose loss, gradient norm or updated parameters are NaN/Inf never "
                                     "changes the state; then:", choices={
        "skip": "count it and go on", "stop": "stop the run at the first one"})
    max_consecutive_nonfinite: int = setting(5, "skip mode: stop after this many in a row.")
    inject_nan_at_steps: str = setting("", "testing only: comma separated steps whose loss is made NaN.")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    guarded_on_resume: ClassVar[bool] = False

    every_steps: int = setting(250, "steps between evaluations.")
    batch_size: int = setting(0, "0: train.batch_size", within="[0, inf)")
    max_batches: int = setting(0, "0: the whole validation split", within="[0, inf)")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    guarded_on_resume: ClassVar[bool] = False

    every_steps: int = setting(250, "steps between checkpoints.")
    keep: int = setting(2, "newest checkpoints kept (plus the best, with keep_best).")
    keep_best: bool = setting(True, "also keep the best checkpoint by validation loss.")
    async_save: bool = setting(True, "write checkpoints in the background while training goes on.")
    divergence_factor: float = setting(4.0, "diverged above this x the lowest mean loss", within="(1, inf]")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    guarded_on_resume: ClassVar[bool] = False

    data: int = setting(-1, "size of the data-parallel mesh axis; -1: the rest of the devices.")
    fsdp: int = setting(1, "size of the parameter-sharding mesh axis; -1: the rest of the devices.")
    tensor: int = setting(1, "size of the tensor-parallel mesh axis; -1: the rest of the devices.")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Where metrics go besides metrics.jsonl and TensorBoard (lm/metrics.py)."""
    guarded_on_resume: ClassVar[bool] = False

    wandb: bool = setting(False, "also log the same scalars and the config to Weights & Biases (pip install "
                                 "'.[tracking]'); the run resumes with its workdir.")
    wandb_project: str = setting("lm", "the W&B project.")
    wandb_entity: str = setting("", "the W&B team or user; empty: the account's default.")
    wandb_mode: str = setting("", "how W&B syncs.", choices={
        "": "the WANDB_MODE environment variable, else online", "online": "uploads as the run goes",
        "offline": "writes <workdir>/wandb only (upload later with `wandb sync`)"})


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    """A jax.profiler trace of a few steps of the run, in <workdir>/profile (Perfetto, TensorBoard's profile plugin)."""
    guarded_on_resume: ClassVar[bool] = False

    start_step: int = setting(0, "the first traced step (1-based, as logged); 0: no trace.")
    num_steps: int = setting(3, "steps traced from start_step.")


@dataclasses.dataclass(frozen=True)
class Config:
    guarded_on_resume: ClassVar[bool] = False  # init_from (a resume ignores it); sections decide for themselves

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
    logging: LoggingConfig = LoggingConfig()
    profile: ProfileConfig = ProfileConfig()
    init_from: str = setting("", "start from the params of a trained run (lm/init_from.py): a workdir (its best or "
                                 "latest checkpoint, finetune.init_checkpoint) or one of its checkpoints "
                                 "(<workdir>/checkpoints/<step>); empty: from scratch. Ignored on resume. A classifier "
                                 "takes only the encoder (its head starts fresh); other objectives take every "
                                 "parameter.")


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_config_dict(config_dict, overrides: Mapping[str, Any] | None = None) -> Config:
    """Converts a (nested) ConfigDict or dict into a checked, frozen Config. `overrides` maps dotted
    keys to values ({"train.steps": 5}), applied as `--config.train.steps=5` would be: an unknown key
    or a wrong type is refused with the key named."""
    values = config_dict.to_dict() if hasattr(config_dict, "to_dict") else copy.deepcopy(dict(config_dict))
    for dotted, value in (overrides or {}).items():
        *sections, field = dotted.split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})  # an unknown section is refused by build, by name
            if not isinstance(node, dict):
                raise ConfigError(f"unknown config key '{dotted}': '{section}' is a setting, not a section")
        node[field] = value
    config = build(Config, values)
    validate(config)
    return config


def guarded_keys() -> frozenset[str]:
    """The dotted keys a resume may not change: the checkpoints would then mean something else."""
    return _GUARDED_KEYS


def is_guarded(key: str) -> bool:
    """Whether a resume may not change the dotted `key`. A key the schema no longer declares (one
    in an older workdir's config.json) is guarded as its section is: model.*, for example."""
    if key in _ALL_KEYS:
        return key in _GUARDED_KEYS
    section = _SECTIONS.get(key.split(".")[0])
    return bool(section and section.guarded_on_resume)


_ALL_KEYS = frozenset(spec.key for spec in schema_fields(Config))
_GUARDED_KEYS = frozenset(spec.key for spec in schema_fields(Config) if spec.guarded)
_SECTIONS = {f.name: type(f.default) for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default)}
