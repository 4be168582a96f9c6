"""How long a train step takes on a chip: analytic FLOPs per device and an efficiency model.

Everything here is per device and per step, from shapes alone (no compiling), so the planner's
search can score hundreds of layouts a second. The model, term by term:

* matmuls: 6 FLOPs per matmul weight and token (forward 2, backward 4); under `remat=full`
  the layer stack's forward runs again in the backward pass, less the attention-output and
  MLP-output projections whose results the backward never reads (XLA drops them: 2 more FLOPs
  per q/k/v/MLP-input weight and token, ~+23% for Llama-2-7B; measured on compiled programs);
  `save_dots` keeps every weight matmul's output, so no matmul is recomputed. They run at the chip's
  `matmul_efficiency` (fitted, lm/hardware.py), lowered for narrow matmuls by
  width / (width + 256) (a 768-wide matmul reaches ~75% of a 4096-wide one's rate).
* attention scores and values: 12 x layers x seq x width per token in the model count. On a
  GPU in bfloat16 `lm` uses cuDNN's flash attention (`model.attention_impl=auto`), which skips
  masked key blocks (causal: about half the work) and recomputes the scores in its backward
  (+1/6); it runs at `flash_attention_efficiency`. Elsewhere (TPU, CPU) `lm`'s einsum path
  computes (n+1)/2n of the causal scores (n = seq / causal_block) at matmul rate and writes the
  float32 scores to memory: ~40 bytes per score element per layer (forward, backward and
  recompute, after XLA's fusion), at HBM bandwidth.
* elementwise work (norms, residuals, rotary, activations, casts, the float32 cross-entropy
  over the vocabulary) and the optimizer's update: bytes moved / HBM bandwidth, not overlapped.
* collectives, ring algorithms, at 70% of the link bandwidth (NCCL / ICI bus efficiency): FSDP
  gathers the compute-dtype weights twice per microbatch (forward, backward; three times with
  `remat=full`) and reduce-scatters the gradients in the compute dtype; the data axis all-reduces gradients once
  per step; the tensor axis all-reduces activations four times per layer per microbatch.
  Overlap assumption: FSDP and data-parallel traffic is scheduled under the layer compute
  (XLA's latency-hiding scheduler, MaxText's pipelined collectives), so only the part beyond
  90% of the compute time shows (`COLLECTIVE_OVERLAP`); tensor-parallel all-reduces sit
  between dependent matmuls and are never hidden. Beyond `node_size` chips, gradient traffic
  leaves the node at `network_bandwidth`.

The fitted constants and the published runs they reproduce are in `CALIBRATION` and
docs/scale.md (predicted MFU beside the published one).
"""

from __future__ import annotations

import dataclasses

from lm.config import ModelConfig
from lm.hardware import Chip

COLLECTIVE_OVERLAP = 0.9  # of the compute time, FSDP/data collectives hide under it
COLLECTIVE_EFFICIENCY = 0.7  # achieved / link bandwidth for large ring collectives
SCORE_BYTES_PER_ELEMENT = 40  # einsum attention: HBM bytes per score element per layer, whole step
NARROW_MATMUL_WIDTH = 256  # the width at which a matmul reaches half of its large-matmul rate


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What the cost model needs of a run: the model, the global batch and how it is split."""
    model: ModelConfig
    batch_size: int  # global, per step
    seq_len: int  # decoder-only / encoder length
    microbatches: int = 1
    target_len: int = 0  # t5: decoder length
    predictions: int = 0  # bert: masked positions the MLM head scores

    @property
    def tokens(self) -> int:
        return self.batch_size * (self.seq_len + self.target_len)


def _dims(m: ModelConfig):
    head_dim = m.head_dim or m.embed_dim // m.num_heads
    kv = m.num_kv_heads or m.num_heads
    attention = m.embed_dim * head_dim * (2 * m.num_heads + 2 * kv)
    mlp = m.embed_dim * m.mlp_dim * (3 if m.mlp_activation == "swiglu" else 2)
    return head_dim, attention, mlp


def model_flops(s: Shapes) -> dict:
    """Model FLOPs per step (the numerator of MFU; no recompute): {"matmul", "attention",
    "layer_matmul"}. Decoder-only: 6 x matmul weights per token + 12 x layers x seq x heads x
    head_dim per token (no causal discount), lm.planning.flops_per_token's definition."""
    m = s.model
    head_dim, attention, mlp = _dims(m)
    width = m.num_heads * head_dim
    rows = s.batch_size
    if m.family == "t5":
        enc, dec = s.seq_len, s.target_len
        dec_layers = m.num_decoder_layers or m.num_layers
        cross_q_out = m.embed_dim * head_dim * 2 * m.num_heads  # on decoder positions
        cross_kv = m.embed_dim * head_dim * 2 * (m.num_kv_heads or m.num_heads)  # on encoder positions
        layer = (m.num_layers * (attention + mlp) * enc
                 + dec_layers * ((attention + cross_q_out + mlp) * dec + cross_kv * enc))
        head = m.embed_dim * m.vocab_size * dec
        scores = 12 * width * (m.num_layers * enc * enc + dec_layers * (dec * dec + dec * enc))
    else:
        layer = m.num_layers * (attention + mlp) * s.seq_len
        scored = s.predictions if m.family == "bert" and s.predictions else s.seq_len
        head = m.embed_dim * m.vocab_size * scored
        scores = 12 * width * m.num_layers * s.seq_len * s.seq_len
    # Full remat recomputes the forward matmuls whose outputs the backward pass needs: q, k, v and
    # the MLP's input projections; XLA drops the recompute of the attention output and MLP output
    # projections (linear, their outputs feed only the residual sum).
    kv = m.num_kv_heads or m.num_heads
    needed = m.embed_dim * head_dim * (m.num_heads + 2 * kv) + m.embed_dim * m.mlp_dim * (
        2 if m.mlp_activation == "swiglu" else 1)
    layer_tokens = s.seq_len * m.num_layers + (s.target_len * (m.num_decoder_layers or m.num_layers)
                                               if m.family == "t5" else 0)
    return {"layer_matmul": 6.0 * layer * rows, "matmul": 6.0 * (layer + head) * rows,
            "recompute": 2.0 * needed * layer_tokens * rows, "attention": float(scores * rows)}


@dataclasses.dataclass
class StepTime:
    """Seconds per step on one device, by term; `seconds` is what the step takes."""
    matmul: float
    attention: float
    elementwise: float
    optimizer: float
    collectives: float  # total collective time
    exposed_collectives: float  # the part not hidden under compute
    hardware_flops: float  # per device, recompute included
    model_flops: float  # global
    seconds: float
    mfu: float
    attention_kind: str


def attention_kind(m: ModelConfig, chip: Chip) -> str:
    """What `lm`'s attention_impl=auto runs on this chip: "flash" (cuDNN) or "einsum"."""
    if m.attention_impl in ("cudnn",):
        return "flash"
    if m.attention_impl == "auto" and chip.platform == "gpu" and m.dtype == "bfloat16" and m.dropout_rate == 0:
        return "flash"
    return "einsum"


def estimate(s: Shapes, mesh: dict, chip: Chip, kind: str | None = None, remat: str | None = None) -> StepTime:
    """Predicted step time of `s` on `mesh` ({"data", "fsdp", "tensor"} sizes) of `chip`s.
    `kind` ("flash" | "einsum") and `remat` default to what the model config says."""
    m = s.model
    kind = kind or attention_kind(m, chip)
    remat = remat or m.remat
    data, fsdp, tensor = mesh.get("data", 1), mesh.get("fsdp", 1), mesh.get("tensor", 1)
    devices = data * fsdp * tensor
    share = 1.0 / devices  # each device's share of the global work
    flops = model_flops(s)
    peak = chip.bf16_flops if m.dtype == "bfloat16" else chip.fp32_flops
    itemsize = 2 if m.dtype == "bfloat16" else 4

    # Matmuls: the layer stack's forward again under full remat (the part its backward needs).
    recompute = flops["recompute"] if remat == "full" else 0.0
    matmul_flops = (flops["matmul"] + recompute) * share
    head_dim, _, _ = _dims(m)
    width = min(m.embed_dim, m.mlp_dim // tensor, m.num_heads * head_dim // tensor)
    efficiency = chip.matmul_efficiency * width / (width + NARROW_MATMUL_WIDTH)
    matmul_time = matmul_flops / (peak * efficiency)

    # Attention scores and values.
    causal = m.family == "gpt"
    rows_per_device = s.batch_size / (data * fsdp)
    heads = m.num_heads / tensor
    if kind == "flash":
        fraction = (0.5 if causal else 1.0) * (3.5 / 3 + (1 / 3 if remat != "none" else 0.0))
        attention_flops = flops["attention"] * share * fraction
        attention_time = attention_flops / (peak * chip.flash_attention_efficiency)
    else:
        blocks = s.seq_len // m.causal_block if causal and m.causal_block and s.seq_len % m.causal_block == 0 else 1
        fraction = ((blocks + 1) / (2 * blocks) if causal else 1.0) * (1 + (1 / 3 if remat != "none" else 0.0))
        attention_flops = flops["attention"] * share * fraction
        score_elements = rows_per_device * heads * m.num_layers * s.seq_len ** 2 * (
            (blocks + 1) / (2 * blocks) if causal else 1.0)
        attention_time = (attention_flops / (peak * chip.matmul_efficiency * head_dim / (head_dim + 64))
                          + score_elements * SCORE_BYTES_PER_ELEMENT / chip.hbm_bandwidth)

    # Elementwise passes over activations (forward, backward, recompute) and the float32
    # cross-entropy over the vocabulary; the optimizer reads and writes its float32 state.
    tokens_per_device = s.tokens / (data * fsdp)
    layers = m.num_layers + (m.num_decoder_layers or (m.num_layers if m.family == "t5" else 0))
    passes = 3 + (remat != "none")
    per_token_layer = (12 * m.embed_dim + 4 * m.mlp_dim / tensor) * itemsize * passes
    vocab_tokens = tokens_per_device if m.family != "bert" else rows_per_device * max(s.predictions, 1)
    elementwise_bytes = tokens_per_device * layers * per_token_layer + vocab_tokens * m.vocab_size / tensor * 4 * 4
    elementwise_time = elementwise_bytes / chip.hbm_bandwidth
    params = _num_params(m)
    optimizer_time = params / (fsdp * tensor) * 4 * 7 / chip.hbm_bandwidth

    # Collectives.
    def bandwidth(group: int) -> float:
        inside = group <= chip.node_size and devices <= chip.node_size
        return (chip.interconnect_bandwidth if inside else chip.network_bandwidth) * COLLECTIVE_EFFICIENCY

    weights = params / tensor
    overlapped = 0.0
    if fsdp > 1:
        gathers = 3 if remat == "full" else 2
        # the weight gradients are reduce-scattered as the matmuls produce them, in the compute
        # dtype, before their cast to the float32 parameters
        per_micro = (gathers + 1) * weights * itemsize * (fsdp - 1) / fsdp
        overlapped += s.microbatches * per_micro / bandwidth(fsdp)
    if data > 1:
        overlapped += 2 * weights / fsdp * 4 * (data - 1) / data / bandwidth(devices)
    exposed_tensor = 0.0
    if tensor > 1:
        activation = tokens_per_device * m.embed_dim * itemsize
        exposed_tensor = 4 * layers * 2 * activation * (tensor - 1) / tensor / bandwidth(tensor)
    compute = matmul_time + attention_time
    exposed = max(overlapped - COLLECTIVE_OVERLAP * compute, 0.0) + exposed_tensor

    seconds = compute + elementwise_time + optimizer_time + exposed
    hardware = matmul_flops + attention_flops
    model_total = flops["matmul"] + flops["attention"]
    return StepTime(matmul_time, attention_time, elementwise_time, optimizer_time, overlapped + exposed_tensor,
                    exposed, hardware, model_total, seconds, model_total / (seconds * devices * peak), kind)


def _num_params(m: ModelConfig) -> float:
    """Parameters, approximately (matmul weights + embedding): what the optimizer and FSDP move."""
    _, attention, mlp = _dims(m)
    layers = m.num_layers + (m.num_decoder_layers or (m.num_layers if m.family == "t5" else 0))
    embeddings = m.vocab_size * m.embed_dim * (1 if m.tie_embeddings else 2)
    return float(layers * (attention + mlp) + embeddings)


@dataclasses.dataclass(frozen=True)
class Published:
    """A published training throughput of another codebase, and the setup it ran."""
    name: str
    shapes: Shapes
    mesh: dict
    chip: str
    attention: str  # "flash" for both MaxText runs (cuDNN on GPU, splash on TPU)
    remat: str  # the nearest of ours: MaxText "minimal"/offloaded projections ~ save_dots
    tokens_per_second_per_chip: float
    published: str  # the figure as published
    source: str


def _llama(layers, width, heads, kv, mlp, vocab, seq) -> ModelConfig:
    return ModelConfig(family="gpt", vocab_size=vocab, num_layers=layers, embed_dim=width, num_heads=heads,
                       num_kv_heads=kv, mlp_dim=mlp, mlp_activation="swiglu", max_len=seq, positions="rotary",
                       norm="rmsnorm", use_bias=False, tie_embeddings=False, param_dtype="float32",
                       dtype="bfloat16", scan_layers=True)


# tokens/s/chip: from the published TFLOP/s with MaxText's count of the time (the same as
# ours: 6 x matmul weights incl. the output layer + 12 x layers x seq x width per token), or
# as published.
_LLAMA2_7B = _llama(32, 4096, 32, 32, 11008, 32000, 4096)
CALIBRATION = (
    Published("Llama-2-7B, 8 x H100 (1 node), MaxText", Shapes(_LLAMA2_7B, 32, 4096), {"fsdp": 8}, "h100",
              "flash", "save_dots", 492e12 / 4.608e10, "492 TFLOP/s/chip",
              "github.com/AI-Hypercomputer/maxtext MaxText/configs/a3/llama_2_7b/README.md (1x A3 h100-80gb-8); "
              "setup from 1vm.sh: fsdp=8, per_device_batch_size=4, seq 4096, cudnn flash, remat minimal_flash"),
    Published("Llama-2-70B, 64 x H100 (8 nodes), MaxText", Shapes(_llama(80, 8192, 64, 8, 28672, 32000, 4096), 128,
                                                                   4096), {"fsdp": 64}, "h100",
              "flash", "save_dots", 1035.97, "460 TFLOP/s/chip, 1,036 tokens/s/chip",
              "NVIDIA NGC 'Maxtext Llama2 70B (DGXC Benchmarking)' 25.01.1: 64 GPUs, FSDP=64, GBS=128, seq 4096"),
    Published("Llama-3.1-8B, v6e-256, MaxText", Shapes(_llama(32, 4096, 32, 8, 14336, 128256, 8192), 1024, 8192),
              {"fsdp": 256}, "tpu-v6e", "flash", "save_dots", 7207.0, "45.46% MFU, 7,207 tokens/s/chip",
              "MaxText docs reference/models/tiering.md (Trillium Gold); setup from benchmarks/"
              "maxtext_trillium_model_configs.py llama3_1_8b_8192: per_device_batch_size=4, projections offloaded"),
    Published("Llama-2-70B, v5p-512, MaxText", Shapes(_llama(80, 8192, 64, 8, 28672, 32000, 4096), 512 * 4, 4096),
              {"fsdp": 512}, "tpu-v5p", "flash", "save_dots", 692.0, "65.4% MFU, 692 tokens/s/chip",
              "MaxText docs reference/models/tiering.md (v5p Gold, 512 chips, bf16, seq 4096); batch 4 per chip "
              "assumed"),
)


def calibration_table(chips: dict) -> list[dict]:
    """Each published run beside this model's prediction for the same setup, MFU by our count."""
    rows = []
    for p in CALIBRATION:
        chip = chips[p.chip]
        predicted = estimate(p.shapes, p.mesh, chip, kind=p.attention, remat=p.remat)
        devices = 1
        for v in p.mesh.values():
            devices *= v
        flops = model_flops(p.shapes)
        per_token = (flops["matmul"] + flops["attention"]) / p.shapes.tokens
        published_mfu = p.tokens_per_second_per_chip * per_token / chip.bf16_flops
        rows.append({"name": p.name, "chip": p.chip, "published": p.published, "published_mfu": published_mfu,
                     "predicted_mfu": predicted.mfu,
                     "predicted_tokens_per_second_per_chip": p.shapes.tokens / predicted.seconds / devices,
                     "error": predicted.mfu / published_mfu - 1, "source": p.source})
    return rows
