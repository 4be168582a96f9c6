"""nanoGPT's CPU recipe for tiny-shakespeare, run here, with Hugging Face's GPT-2 as the model.

The foundation issue's reference is nanoGPT's documented CPU run: characters as tokens, 4
layers, width 128, 4 heads, 2000 steps of 12 x 64 characters, AdamW (lr 1e-3, betas 0.9/0.99,
weight decay 0.1 on matrices only), 100 warm-up steps then cosine decay to 1e-4, gradient
clipping at 1.0, no dropout, and an evaluation every 250 steps on 20 random batches of each
split; the first 90% of the text trains, the last 10% validates. It reached 1.886 nats per
character (2.72 bits per byte) in 2 min 3 s on a machine like this one.

nanoGPT itself cannot be fetched here (no network), so `transformers`' GPT2LMHeadModel stands
in for its model: the same architecture (pre-norm GPT-2 blocks, learned positions, tied
embeddings, scaled residual-projection init), except that GPT-2 keeps its biases where nanoGPT
drops them by default (+0.5% parameters). Everything else follows the recipe above, so the
wall clock measures the recipe on this machine, in PyTorch eager float32, beside our own run.

Each evaluation also scores the whole validation text (non-overlapping 64-character windows),
outside the timed wall clock: the recipe's 20-batch estimate is noisy, the full pass is what
our `eval/bits_per_byte` means.
"""

from __future__ import annotations

import math
import time

import numpy as np

RECIPE = dict(layers=4, width=128, heads=4, block=64, batch=12, steps=2000, lr=1e-3, min_lr=1e-4, warmup=100,
              betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0, eval_every=250, eval_batches=20)
NATS_TO_BITS = 1 / math.log(2)


def _learning_rate(step: int, r: dict) -> float:
    if step < r["warmup"]:
        return r["lr"] * (step + 1) / (r["warmup"] + 1)
    progress = min(1.0, (step - r["warmup"]) / (r["steps"] - r["warmup"]))
    return r["min_lr"] + 0.5 * (1 + math.cos(math.pi * progress)) * (r["lr"] - r["min_lr"])


def train(text: str, target_bits_per_byte: float = 2.72, seed: int = 1337, steps: int = 0,
          log=print) -> dict:
    """Runs the recipe on `text` (ASCII, so one character = one byte) and returns the eval history
    with each point's wall time, plus when the full-validation bits per byte first fell below
    `target_bits_per_byte`."""
    try:
        import torch
        import transformers
    except ImportError as error:
        raise SystemExit(f"the recipe peer needs PyTorch and transformers ({error}): pip install -e '.[hf]'")
    r = dict(RECIPE, steps=steps or RECIPE["steps"])
    chars = sorted(set(text))
    ids = np.frombuffer(text.encode("latin-1"), np.uint8)
    lookup = np.zeros(256, np.int64)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars))
    data = lookup[ids]
    split = int(0.9 * len(data))
    splits = {"train": torch.from_numpy(data[:split]), "val": torch.from_numpy(data[split:])}

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(chars), n_positions=r["block"], n_embd=r["width"], n_layer=r["layers"], n_head=r["heads"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=None))
    matrices = [p for p in model.parameters() if p.dim() >= 2]  # decay matrices and embeddings, not biases/norms
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": r["weight_decay"]},
                                   {"params": others, "weight_decay": 0.0}], lr=r["lr"], betas=r["betas"])
    generator = torch.Generator().manual_seed(seed)

    def batch(name):
        source = splits[name]
        starts = torch.randint(len(source) - r["block"] - 1, (r["batch"],), generator=generator)
        x = torch.stack([source[s:s + r["block"]] for s in starts])
        y = torch.stack([source[s + 1:s + 1 + r["block"]] for s in starts])
        return x, y

    def loss_of(x, y):
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def recipe_estimate():  # what nanoGPT prints: the mean over 20 random batches of each split
        model.eval()
        means = {name: float(np.mean([float(loss_of(*batch(name))) for _ in range(r["eval_batches"])]))
                 for name in ("train", "val")}
        model.train()
        return means

    @torch.no_grad()
    def full_validation_bits_per_byte():
        model.eval()
        val = splits["val"]
        windows = (len(val) - 1) // r["block"]
        total, count = 0.0, 0
        for first in range(0, windows, 64):
            starts = range(first * r["block"], min(windows, first + 64) * r["block"], r["block"])
            x = torch.stack([val[s:s + r["block"]] for s in starts])
            y = torch.stack([val[s + 1:s + 1 + r["block"]] for s in starts])
            logits = model(input_ids=x).logits
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                             reduction="sum"))
            count += y.numel()
        model.train()
        return total / count * NATS_TO_BITS

    history, reached, excluded = [], None, 0.0
    started = time.perf_counter()
    for step in range(r["steps"] + 1):
        if step % r["eval_every"] == 0 or step == r["steps"]:
            estimate = recipe_estimate()
            wall = time.perf_counter() - started - excluded
            paused = time.perf_counter()
            full = full_validation_bits_per_byte()
            excluded += time.perf_counter() - paused
            history.append({"step": step, "wall_time": wall, "val_loss_estimate": estimate["val"],
                            "val_bits_per_byte_estimate": estimate["val"] * NATS_TO_BITS,
                            "val_bits_per_byte": full})
            if reached is None and full < target_bits_per_byte:
                reached = history[-1]
            log(f"step {step:5d}  {wall:6.1f} s  val loss (20 batches) {estimate['val']:.4f}  "
                f"full-validation bits/byte {full:.4f}")
        if step == r["steps"]:
            break
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, r)
        x, y = batch("train")
        loss = loss_of(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        optimizer.step()
    return {"peer": f"nanoGPT CPU recipe, transformers {transformers.__version__} GPT-2, torch {torch.__version__} "
                    f"eager float32, {torch.get_num_threads()} threads",
            "parameters": sum(p.numel() for p in model.parameters()), "history": history,
            "target_bits_per_byte": target_bits_per_byte, "reached": reached,
            "wall_time": history[-1]["wall_time"]}
