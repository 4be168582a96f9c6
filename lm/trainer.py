"""The host loop: the one place that brings data, model, optimizer, mesh and checkpoints together.

config -> corpus, model, optimizer, mesh -> jitted steps -> loop -> checkpoints and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import flax.linen as nn
import jax

from lm import checkpoint as checkpoint_lib
from lm import metrics as metrics_lib
from lm import models, optimizer, sampling, sharding, steps
from lm.config import Config, ConfigError, ModelConfig
from lm.data import pipeline


def log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def resolve_model_config(model: ModelConfig, tokenizer_vocab: int) -> ModelConfig:
    if model.vocab_size == 0:
        return dataclasses.replace(model, vocab_size=tokenizer_vocab)
    if model.vocab_size < tokenizer_vocab:
        raise ConfigError(f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's vocabulary "
                          f"({tokenizer_vocab}): set model.vocab_size to at least {tokenizer_vocab}, or 0 to match it")
    return model


def _check_batch_layout(config: Config, mesh) -> None:
    """The global batch formula: batch_size = microbatches x (data x fsdp devices) x rows per device."""
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    for name, size in (("train.batch_size", config.train.batch_size // config.train.microbatches),
                       ("eval.batch_size", config.eval.batch_size or config.train.batch_size)):
        if size % data_parallel:
            raise ConfigError(f"{name} (per microbatch: {size}) does not divide over the {data_parallel} "
                              f"data-parallel devices (mesh data x fsdp): use a multiple of {data_parallel}")


@dataclasses.dataclass
class Run:
    """Everything a loop needs, built once from the config (before any compilation)."""
    config: Config
    model_config: ModelConfig
    corpus: pipeline.Corpus
    mesh: jax.sharding.Mesh
    model: nn.Module
    state_shardings: steps.TrainState
    abstract_state: steps.TrainState
    init_fn: object
    train_step: object
    eval_step: object


def build(config: Config) -> Run:
    corpus = pipeline.prepare(config.data, config.tokenizer)
    model_config = resolve_model_config(config.model, corpus.tokenizer.vocab_size)
    mesh = sharding.make_mesh(config.mesh)
    _check_batch_layout(config, mesh)
    model = models.build(model_config)
    tx = optimizer.build(config.optimizer, config.train.steps)
    init = lambda: steps.init_state(model, tx, config.train.seed, config.data.seq_len)  # noqa: E731
    boxed = jax.eval_shape(init)
    state_shardings = sharding.logical_shardings(boxed, mesh)
    abstract_state = checkpoint_lib.abstract_with_shardings(nn.meta.unbox(boxed), state_shardings)
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    train_step = jax.jit(
        steps.make_train_step(model, tx, optimizer.schedule(config.optimizer, config.train.steps),
                              config.train.microbatches, config.train.z_loss, model_config.dropout_rate > 0),
        in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
        donate_argnums=(0,))
    eval_step = jax.jit(steps.make_eval_step(model), in_shardings=(state_shardings.params, batch_sharding),
                        out_shardings=replicated)
    init_fn = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=state_shardings)
    return Run(config, model_config, corpus, mesh, model, state_shardings, abstract_state, init_fn, train_step,
               eval_step)


def evaluate(run: Run, params) -> dict[str, float]:
    """Loss (nats/token), perplexity, bits per byte and accuracy over the validation split."""
    cfg = run.config
    totals = None
    for batch in pipeline.eval_batches(run.corpus, cfg.data.seq_len, cfg.eval.batch_size or cfg.train.batch_size,
                                       cfg.eval.max_batches, jax.process_index(), jax.process_count()):
        sums = run.eval_step(params, sharding.to_global(batch, run.mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.tree.map(float, jax.device_get(totals))
    loss = totals["loss_sum"] / max(totals["weight"], 1.0)
    return {
        "eval/loss": loss,
        "eval/perplexity": math.exp(min(loss, 50.0)),
        "eval/bits_per_byte": totals["loss_sum"] / math.log(2) / max(totals["bytes"], 1.0),
        "eval/accuracy": totals["correct"] / max(totals["weight"], 1.0),
    }


def _write_run_files(workdir: str, config: Config, run: Run) -> None:
    if jax.process_index() != 0:
        return
    resolved = dataclasses.replace(config, model=run.model_config)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(resolved), f, indent=2, sort_keys=True)
    run.corpus.tokenizer.save(os.path.join(workdir, "tokenizer.model"))


def train(config: Config, workdir: str) -> dict[str, float]:
    """Trains (or resumes) in `workdir`; returns the last evaluation's metrics."""
    os.makedirs(workdir, exist_ok=True)
    started = time.time()
    run = build(config)
    _write_run_files(workdir, config, run)
    cfg, tokens_per_step = config, config.train.batch_size * config.data.seq_len
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(run.abstract_state.params))
    log(f"model: {num_params:,} parameters | mesh {dict(run.mesh.shape)} on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), {jax.process_count()} process(es) | batch {cfg.train.batch_size} x "
        f"{cfg.data.seq_len} tokens = {tokens_per_step:,} per step | data ready in {time.time() - started:.1f}s")

    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), cfg.checkpoint)
    train_iter = pipeline.train_iterator(run.corpus, cfg.data.seq_len, cfg.train.batch_size, cfg.data.seed,
                                         jax.process_index(), jax.process_count(), cfg.data.prefetch)
    latest = checkpointer.latest_step()
    if latest is not None:
        state, data_state = checkpointer.restore(latest, run.abstract_state)
        if data_state is not None:
            train_iter.set_state(data_state)
        log(f"resumed from step {latest} ({checkpointer.directory})")
    else:
        state = run.init_fn()

    writer = metrics_lib.MetricsWriter(workdir)
    step = int(jax.device_get(state.step))
    last_eval: dict[str, float] = {}
    best_loss, evals_without_improvement = math.inf, 0
    pending = None  # (step, metrics on device): read one step late so the host never stalls the device.
    interval_start, interval_steps = time.time(), 0
    stop_early = False

    def report(at_step, device_metrics):
        nonlocal interval_start, interval_steps
        values = jax.device_get(device_metrics)
        elapsed = time.time() - interval_start
        tokens_per_sec = interval_steps * tokens_per_step / max(elapsed, 1e-9)
        record = {f"train/{k}": v for k, v in values.items() if k != "tokens"}
        record["train/tokens_per_sec"] = tokens_per_sec
        writer.write(at_step, record)
        eta = (cfg.train.steps - at_step) * elapsed / max(interval_steps, 1)
        log(f"step {at_step:>6}/{cfg.train.steps} | loss {float(values['loss']):.4f} | "
            f"{tokens_per_sec:,.0f} tokens/s | lr {float(values['learning_rate']):.2e} | "
            f"eta {metrics_lib.format_duration(eta)}")
        interval_start, interval_steps = time.time(), 0

    with sharding.activation_rules(run.mesh):
        while step < cfg.train.steps and not stop_early:
            batch = sharding.to_global(next(train_iter), run.mesh)
            state, device_metrics = run.train_step(state, batch)
            step += 1
            interval_steps += 1
            if pending is not None:
                report(*pending)
                pending = None
            if step == 1 or (latest is not None and step == latest + 1):
                jax.block_until_ready(device_metrics)
                log(f"first step compiled and ran in {time.time() - interval_start:.1f}s")
                interval_start, interval_steps = time.time(), 0
            if step % cfg.train.log_every_steps == 0 or step == cfg.train.steps:
                pending = (step, device_metrics)
            eval_now = step % cfg.eval.every_steps == 0 or step == cfg.train.steps
            if eval_now:
                if pending is not None:
                    report(*pending)
                    pending = None
                last_eval = evaluate(run, state.params)
                writer.write(step, last_eval)
                log(f"eval at step {step}: loss {last_eval['eval/loss']:.4f} | perplexity "
                    f"{last_eval['eval/perplexity']:.2f} | bits per byte {last_eval['eval/bits_per_byte']:.4f}")
                if last_eval["eval/loss"] < best_loss:
                    best_loss, evals_without_improvement = last_eval["eval/loss"], 0
                else:
                    evals_without_improvement += 1
                    if 0 < cfg.train.early_stopping_patience <= evals_without_improvement:
                        log(f"early stopping: no improvement in validation loss for {evals_without_improvement} "
                            f"evaluations (best {best_loss:.4f})")
                        stop_early = True
                interval_start, interval_steps = time.time(), 0  # evaluation time is not training time
            if step % cfg.checkpoint.every_steps == 0 or step == cfg.train.steps or stop_early:
                checkpointer.save(step, state, train_iter.get_state(), last_eval if eval_now else None)
        if pending is not None:
            report(*pending)

        checkpointer.close()
        if not last_eval:  # resumed a finished run: report where it stands.
            last_eval = evaluate(run, state.params)
        sample = generate_sample(run, state.params)
    log(f"sample:\n{sample}")
    writer.write_text("sample", sample, step)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "sample.txt"), "w") as f:
            f.write(sample + "\n")
    writer.close()
    log(f"done: step {step} in {metrics_lib.format_duration(time.time() - started)}; "
        + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
    return last_eval


def generate_sample(run: Run, params) -> str:
    cfg, tokenizer = run.config.train, run.corpus.tokenizer
    prompt = [tokenizer.eos_id] + tokenizer.encode(cfg.sample_prompt)  # EOS opens a document, as in training.
    new = sampling.sample(run.model, params, prompt, cfg.sample_tokens, run.config.data.seq_len,
                          cfg.sample_temperature, seed=cfg.seed, stop_id=tokenizer.eos_id)
    return cfg.sample_prompt + tokenizer.decode(new)

