"""The peer `tools/bench.py --peer=hf` measures: Hugging Face `transformers`' GPT-2 trained with
PyTorch's AdamW on the CPU, eager, float32, at the shapes of one of our GPT configs.

Shapes map one to one (layers, width, heads, MLP width, vocabulary, sequence length, batch),
dropout off, tied embeddings, learned positions: what GPT-2 is. Install with
`pip install -e '.[hf]'`; torch and transformers are not core dependencies.
"""

from __future__ import annotations

import time

import numpy as np

from lm.config import Config


def _require():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise SystemExit(f"--peer=hf needs PyTorch and transformers ({error}): pip install -e '.[hf]'")
    return torch, transformers


def check_shapes(config: Config) -> None:
    """GPT-2 is LayerNorm + GELU + learned positions + tied embeddings: refuse configs that
    would make the comparison one of different models."""
    m = config.model
    mismatches = [f"model.{name}={getattr(m, name)!r} (GPT-2 has {want!r})" for name, want in
                  (("positions", "learned"), ("norm", "layernorm"), ("mlp_activation", "gelu"),
                   ("tie_embeddings", True), ("num_kv_heads", 0)) if getattr(m, name) != want]
    if mismatches:
        raise SystemExit("--peer=hf compares with GPT-2, but " + "; ".join(mismatches))


def train_steps(config: Config, num_steps: int, warmup: int = 2) -> dict:
    """Times `num_steps` eager AdamW steps of GPT2LMHeadModel on random tokens. Call it in a
    process of its own (tools/bench.py does): PyTorch's and XLA's thread pools spin-wait after
    work, so sharing a process would slow whichever runs second."""
    torch, transformers = _require()
    check_shapes(config)
    m, seq, batch = config.model, config.data.seq_len, config.train.batch_size
    vocab = m.vocab_size or config.tokenizer.vocab_size
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=max(m.max_len, seq), n_embd=m.embed_dim, n_layer=m.num_layers,
        n_head=m.num_heads, n_inner=m.mlp_dim, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=m.norm_eps, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
        loss_type="ForCausalLM"))
    model.train()
    opt = config.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps,
                                  weight_decay=opt.weight_decay)
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (batch, seq), dtype=np.int64))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        if opt.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip_norm)
        optimizer.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(num_steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    median = float(np.median(times))
    with open("/proc/self/status") as f:  # this process's resident-set high-water mark
        peak = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")), 0)
    return {"peer": f"transformers {transformers.__version__} GPT-2, torch {torch.__version__} eager float32 "
                    f"AdamW, {torch.get_num_threads()} threads",
            "peer_step_seconds": times, "peer_tokens_per_sec": batch * seq / median,
            "peer_step_cpu_seconds": cpu_times, "peer_tokens_per_cpu_sec": batch * seq / float(np.median(cpu_times)),
            "peer_parameters": sum(p.numel() for p in model.parameters()), "peer_process_peak_rss_bytes": peak}


def train_steps_in_subprocess(config: Config, num_steps: int, warmup: int = 2) -> dict:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(train_steps, (config, num_steps, warmup))
