"""The run loop: steps, evaluations, checkpoints and metrics over time, for every objective.

lm/assembly.py builds the run (data, model, optimizer, mesh, compiled steps); this module
drives it: resume or initialise, step, log one step late so the host never stalls the device,
evaluate, stop early, checkpoint, survive preemption, and at the end the hooks: the best
checkpoint's report (objectives whose pipeline has `report_fields`) and the sample.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import jax

from lm import assembly
from lm import checkpoint as checkpoint_lib
from lm import goodput, init_from, planning, profiling, sharding
from lm import metrics as metrics_lib
from lm import run_guards, storage
from lm import workdir as workdir_lib
from lm.assembly import Run
from lm.data import corpus
from lm.config import Config


def log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


class _EarlyStopping:
    """The best value of the selection metric so far and the evaluations since it improved. A
    resumed run replays its logged evaluations up to the restored step (`replay`), so it stops
    where the uninterrupted run would have."""

    def __init__(self, patience: int, higher_is_better: bool):
        self.patience, self.higher = patience, higher_is_better
        self.best, self.stale = (-math.inf if higher_is_better else math.inf), 0

    def update(self, value: float) -> bool:
        """Records one evaluation; True when the run should stop."""
        if (value > self.best) if self.higher else (value < self.best):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        return 0 < self.patience <= self.stale

    def replay(self, workdir: str, metric: str, up_to_step: int) -> None:
        for step, record in sorted(metrics_lib.records(workdir, metric).items()):
            if step <= up_to_step:
                self.update(record[metric])


def train(config: Config, workdir: str, allow_config_change: bool = False) -> dict[str, float]:
    """Trains (or resumes) in `workdir`; returns the last evaluation's metrics. Holds the
    workdir's lock throughout; SIGTERM or SIGINT checkpoints and returns early."""
    storage.makedirs(workdir)
    lock = workdir_lib.WorkdirLock(workdir, log).acquire() if jax.process_index() == 0 else None
    try:
        with run_guards.Preemption(log) as preemption:
            return _train(config, workdir, allow_config_change, preemption)
    finally:
        if lock is not None:
            lock.release()


class _Progress:
    """Train-metric records and the progress line (steps, loss, tokens/s, lr, ETA). A step's
    metrics are read one step late, so the host never stalls the device waiting for them."""

    def __init__(self, writer: metrics_lib.MetricsWriter, total_steps: int, tokens_per_step: int,
                 flops_per_token: float, peak_flops: float, timeline: goodput.Timeline, tokens_seen=None):
        self.writer, self.total_steps, self.tokens_per_step = writer, total_steps, tokens_per_step
        self.flops_per_token, self.peak_flops, self.timeline = flops_per_token, peak_flops, timeline
        self.tokens_seen = tokens_seen  # streaming input: step -> {source: tokens given so far}
        self.pending = None  # (step, metrics on device) to report once the next step is queued
        self.restart_clock(0)

    def restart_clock(self, done_step: int) -> None:
        """Time from here on is training time (evaluation and compilation are not). `done_step`
        is the last step known to have finished: a window counts the steps that finished inside
        it, not the ones dispatched (dispatch runs a step ahead of the device)."""
        self.interval_start, self.interval_from = time.time(), done_step

    def after_step(self, step: int, device_metrics, first_of_run: bool, log_now: bool) -> None:
        self.flush()
        if first_of_run:
            jax.block_until_ready(device_metrics)
            log(f"first step compiled and ran in {time.time() - self.interval_start:.1f}s")
            self.restart_clock(step)
        if log_now:
            self.pending = (step, device_metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        at_step, device_metrics = self.pending
        self.pending = None
        values = jax.device_get(device_metrics)  # returns once step `at_step` has finished
        elapsed = time.time() - self.interval_start
        steps = at_step - self.interval_from
        record = {f"train/{k}": v for k, v in values.items() if k != "tokens"}
        rate = eta = ""  # a window with no finished step (logging at the first step) has no rate
        if steps > 0:
            tokens_per_sec = steps * self.tokens_per_step / max(elapsed, 1e-9)
            record["train/tokens_per_sec"] = tokens_per_sec
            record["train/mfu"] = tokens_per_sec * self.flops_per_token / self.peak_flops
            rate = f"{tokens_per_sec:,.0f} tokens/s | mfu {record['train/mfu']:.1%} | "
            eta = f" | eta {metrics_lib.format_duration((self.total_steps - at_step) * elapsed / steps)}"
        record.update(self.timeline.record())
        if self.tokens_seen is not None:
            record.update({f"train/tokens/{name}": count for name, count in self.tokens_seen(at_step).items()})
        self.writer.write(at_step, record)
        log(f"step {at_step:>6}/{self.total_steps} | loss {float(values['loss']):.4f} | {rate}"
            f"goodput {record['train/goodput']:.0%} | lr {float(values['learning_rate']):.2e}{eta}")
        self.restart_clock(at_step)


def _prepare(config: Config, workdir: str, allow_config_change: bool) -> Run:
    """The Run, after every check that can refuse the workdir, and the workdir's run files."""
    started = time.time()
    resuming = workdir_lib.has_checkpoints(workdir)
    if config.init_from and not resuming:
        init_from.check(config)  # a wrong source fails here, before any data is read or anything compiles
    elif (config.finetune.init_shrink, config.finetune.init_perturb) != (1.0, 0.0):
        log(f"note: finetune.init_shrink/init_perturb act on init_from's params only; this run "
            f"{'resumes its own checkpoints' if resuming else 'starts from scratch'}, so they are not applied")
    # A resumed run reads the workdir's own tokenizer copy: it needs neither its init_from source nor
    # the tokenizer it started from to still exist. The workdir check below compares the config as given.
    own_tokenizer = storage.join(workdir, workdir_lib.TOKENIZER)
    run = assembly.build(dataclasses.replace(config, tokenizer=dataclasses.replace(config.tokenizer, path=own_tokenizer))
                         if resuming and storage.exists(own_tokenizer) else config, log)
    # Every process checks (each reads the same files), so a refusal stops all of them, not only process 0.
    resolved = dataclasses.replace(config, model=run.model_config)
    as_saved = json.loads(json.dumps(dataclasses.asdict(resolved)))  # compared with config.json as JSON reads back
    workdir_lib.check_config(workdir, as_saved, run.data.tokenizer.model_proto, allow_config_change, log)
    # Digests computed once per process, when the data was built. A fine-tuning run reads no corpus
    # files: it neither needs the ones its config inherits nor compares them (older workdirs list them).
    data_files = {}
    if run.task.pipeline.reads_data_files:
        data_files = corpus.data_files(config.data)
        workdir_lib.check_data_files(workdir, data_files, allow_config_change, log)
    _check_shapes(workdir, run.abstract_state.params)  # before config.json is (re)written
    if jax.process_index() == 0:
        workdir_lib.write_run_files(workdir, resolved, run.data.tokenizer, data_files)
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(run.abstract_state.params))
    log(f"model: {num_params:,} parameters | mesh {dict(run.mesh.shape)} on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), {jax.process_count()} process(es) | batch {config.train.batch_size} x "
        f"{config.data.seq_len} tokens = {config.train.batch_size * config.data.seq_len:,} per step | data ready in "
        f"{time.time() - started:.1f}s")
    return run


def _restore(run: Run, checkpointer, train_iter):
    """(state, step) of the newest verified checkpoint, with the data position restored; None
    when there is none to resume from."""
    restored = checkpointer.restore_latest(run.abstract_state)  # verified; falls back past corrupt ones
    if restored is not None:
        latest, state, data_state = restored
        if data_state is not None:
            train_iter.set_state(data_state)
        log(f"resumed from step {latest} ({checkpointer.directory})")
        return state, latest
    if storage.isdir(checkpointer.corrupt_directory):
        log(f"WARNING: no usable checkpoint in {checkpointer.directory} (earlier ones were set aside in "
            f"{checkpointer.corrupt_directory}): this run starts from step 1")
    return None


def _fresh_state(run: Run, config: Config):
    """A fresh init, with init_from's pretrained params and a fresh optimizer."""
    state = run.init_fn()
    if config.init_from:  # an objective may take only a subtree of the pretrained params (BERT's encoder)
        state = init_from.restore(state, config, run.task.objective.init_from_subtree, log,
                                  run.task.objective.init_from_new)
    return state


def _first_eval_batch(run: Run):
    batches = run.task.pipeline.eval_batches(run.data, jax.process_index(), jax.process_count())
    first = next(iter(batches), None)
    return None if first is None else sharding.to_global(first, run.mesh)


def _check_shapes(workdir: str, abstract_params) -> None:
    """Refuses, before restoring anything, checkpoints of a model with other shapes: restoring
    would fail, and the fallback would set good checkpoints aside as corrupt and start over.
    (A workdir without config.json, or --allow_config_change, lets such a config get this far.)"""
    steps = workdir_lib.checkpoint_steps(workdir)
    directory = storage.join(workdir, workdir_lib.CHECKPOINTS)
    changes = checkpoint_lib.shape_changes(directory, steps[-1], abstract_params) if steps else None
    if changes:
        listed = "\n".join(f"  {line}" for line in changes[:8]) + ("\n  ..." if len(changes) > 8 else "")
        raise workdir_lib.RunError(
            f"the checkpoints in {directory} hold a model of other shapes than this config builds (saved -> now):\n"
            f"{listed}\nThey were left as they are. Run with the config that made them (the original command), or "
            f"give another --workdir; --allow_config_change accepts changes that keep every shape, not another model.")


def _train(config: Config, workdir: str, allow_config_change: bool,
           preemption: run_guards.Preemption) -> dict[str, float]:
    opened: list = []  # the checkpointer and the metrics writer, once made
    try:
        return _run(config, workdir, allow_config_change, preemption, opened)
    except BaseException:
        # Close what runs in the background (orbax's save threads, the metrics files) before the error
        # ends the process, so the cause is the last thing printed rather than their shutdown noise.
        for resource in opened:
            try:
                resource.close()
            except Exception:  # noqa: BLE001 (a second failure, e.g. the same full disk, must not hide the first)
                pass
        raise


def _run(config: Config, workdir: str, allow_config_change: bool, preemption: run_guards.Preemption,
         opened: list) -> dict[str, float]:
    cfg = config
    timeline = goodput.Timeline()  # where the wall time goes: goodput and the breakdown at the end
    with timeline.part("setup"):  # its own span: the next one overlaps compiles, which hide its setup time
        run = _prepare(config, workdir, allow_config_change)
    with timeline.part("setup"):
        pipeline = run.task.pipeline
        # The validation metric that picks the best checkpoint and stops early: an objective may name its own.
        select_name, select_higher = run.task.objective.selection
        checkpointer = checkpoint_lib.Checkpointer(storage.join(workdir, workdir_lib.CHECKPOINTS), cfg.checkpoint,
                                                   log, select_name, select_higher)
        train_iter = pipeline.train_iterator(run.data, jax.process_index(), jax.process_count())
        opened.append(checkpointer)
        state, latest = _restore(run, checkpointer, train_iter) or (None, None)
        # The first batch is read now so the train step can compile, beside the eval step, while
        # the state initialises (lm/assembly.py's CompileAhead).
        first_batch = (sharding.to_global(next(train_iter), run.mesh) if (latest or 0) < cfg.train.steps
                       else None)
        compiling = assembly.CompileAhead(run, first_batch, _first_eval_batch(run))
        if state is None:
            state = _fresh_state(run, config)

        writer = metrics_lib.MetricsWriter(workdir, logging=config.logging)
        opened.append(writer)
        step = int(jax.device_get(state.step))
        writer.write_config(dataclasses.asdict(dataclasses.replace(config, model=run.model_config)), step)
        last_eval: dict[str, float] = {}
        early_stopping = _EarlyStopping(cfg.train.early_stopping_patience, select_higher)
        guard = run_guards.LossGuard(config, checkpointer, log)
        if latest is not None:
            early_stopping.replay(workdir, select_name, latest)
            guard.replay(workdir, latest)
        train_step = compiling.wait()  # before the CPU's matmul peak is measured: beside a compile it reads low
        progress = _Progress(writer, cfg.train.steps, cfg.train.batch_size * cfg.data.seq_len,
                             planning.flops_per_token(run.model_config, cfg.data.seq_len),
                             goodput.peak_flops(run.model_config.dtype), timeline,
                             getattr(train_iter, "tokens_seen", None))
        stop_early = False
        trace = profiling.TraceWindow(cfg.profile, workdir, log)

    with sharding.activation_rules(run.mesh):
        while step < cfg.train.steps and not stop_early:
            with timeline.part("data_wait"):
                batch = first_batch if first_batch is not None else sharding.to_global(next(train_iter), run.mesh)
                first_batch = None
            with timeline.part("train_step"):
                with trace.step(step + 1):
                    state, device_metrics = train_step(state, batch)
                step += 1
                trace.after_step(step, device_metrics)
                guard.push(step, device_metrics)
                checkpointer.check_for_errors()  # a background save that failed (a full disk) stops the run now
                progress.after_step(step, device_metrics,
                                    first_of_run=step == 1 or (latest is not None and step == latest + 1),
                                    log_now=step % cfg.train.log_every_steps == 0 or step == cfg.train.steps)
            eval_now = step % cfg.eval.every_steps == 0 or step == cfg.train.steps
            if eval_now:
                with timeline.part("train_step"):
                    progress.flush()
                with timeline.part("eval"):
                    last_eval = assembly.evaluate(run, state.params)
                    writer.write(step, last_eval)
                log(f"eval at step {step}: " + " | ".join(
                    f"{name.split('/', 1)[1].replace('_', ' ')} {value:.4f}" for name, value in last_eval.items()))
                if early_stopping.update(last_eval[select_name]):
                    log(f"early stopping: no improvement in {select_name} for {early_stopping.stale} "
                        f"evaluations (best {early_stopping.best:.4f})")
                    stop_early = True
                progress.restart_clock(step)  # the evaluation waited for this step's parameters
            preempted = preemption.poll(step)  # every step: hosts agree on the step to stop at
            at_end = step == cfg.train.steps or stop_early or preempted
            if step % cfg.checkpoint.every_steps == 0 or at_end:
                with timeline.part("train_step"):
                    guard.flush()  # a run that is to stop on a non-finite step stops before writing this checkpoint
                    writer.write(step, guard.before_checkpoint(step))  # refuses a diverged state
                    writer.sync(force=True)  # a workdir on an object store: the metrics up to this checkpoint
                with timeline.part("checkpoint"):
                    checkpointer.save(step, state, train_iter.get_state(), last_eval if eval_now else None)
            if preemption.requested:
                break
        with timeline.part("train_step"):
            trace.stop(state)  # a run that ended inside the trace window
            guard.flush()
            progress.flush()
        fields = pipeline.report_fields(run.data)
        if fields is not None and not preemption.requested:
            with timeline.part("checkpoint"):
                checkpointer.wait()
            with timeline.part("eval"):
                _write_report(run, workdir, checkpointer, fields)

        with timeline.part("checkpoint"):
            checkpointer.close()
        if preemption.requested:
            _finish(writer, timeline, step)
            log(f"preempted: stopped after step {step} on {preemption.signal_name}; checkpoint {step} written to "
                f"{checkpointer.directory}. Run the same command again to resume.")
            return last_eval
        with timeline.part("eval"):
            if not last_eval:  # resumed a finished run: report where it stands.
                last_eval = assembly.evaluate(run, state.params)
            sample = pipeline.sample(run.model, state.params, run.data)
    _write_sample(workdir, writer, sample, step)
    _finish(writer, timeline, step)
    log(f"done: step {step} in {metrics_lib.format_duration(timeline.wall_seconds())}; "
        + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
    return last_eval


def _finish(writer: metrics_lib.MetricsWriter, timeline: goodput.Timeline, step: int) -> None:
    """The run's whole time breakdown: printed, and recorded at the last step."""
    writer.write(step, timeline.record())
    log(timeline.breakdown())
    writer.close()


def _write_report(run: Run, workdir: str, checkpointer, fields: dict) -> dict:
    """The end-of-run hook of objectives that select a checkpoint (fine-tuning): evaluates the
    best kept checkpoint by the selection metric into eval_report.json, beside the last one."""
    name = run.task.objective.selection[0]
    scores = metrics_lib.records(workdir, name)
    _, best = workdir_lib.resolve(workdir, "best")  # the rule every reader of a trained run uses
    state, _ = checkpointer.restore(best, run.abstract_state, with_data=False)
    last = max(scores)
    report = {**fields, "selected_by": name, "best_step": best, "best": assembly.evaluate(run, state.params),
              "last_step": last, "last": {k: v for k, v in scores[last].items() if k.startswith("eval/")},
              "init_from": run.config.init_from or None}
    test = run.task.pipeline.test_batches(run.data, jax.process_index(), jax.process_count())
    if test is not None:  # the held-out split, scored once, on the checkpoint validation chose
        report["test"] = {k.replace("eval/", "test/", 1): v for k, v in assembly.evaluate(run, state.params, test).items()}
        log("test split (best checkpoint): " + ", ".join(f"{k} {v:.4f}" for k, v in report["test"].items()))
    if jax.process_index() == 0:
        workdir_lib.write_json(storage.join(workdir, "eval_report.json"), report)
    return report


def _write_sample(workdir: str, writer: metrics_lib.MetricsWriter, sample: str | None, step: int) -> None:
    """The pipeline's sample (a generation, a prediction) to the log, TensorBoard and sample.txt."""
    if sample is None:
        return
    log(f"sample:\n{sample}")
    writer.write_text("sample", sample, step)
    if jax.process_index() == 0:
        storage.write_text(storage.join(workdir, "sample.txt"), sample + "\n")
