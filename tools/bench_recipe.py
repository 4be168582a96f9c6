"""Time to 2.72 validation bits per byte on tiny-shakespeare: nanoGPT's CPU recipe beside our
configs, one after the other on this machine, in one run.

  python tools/bench_recipe.py [--config=configs/gpt_speedrun.py --config=configs/gpt_tiny.py]
      [--set=data.train_files=FILE ...] [--skip_peer] [--json=FILE] [--markdown=FILE]

The peer is nanoGPT's documented CPU recipe with Hugging Face's GPT-2 as its model
(diagnostics/peers/char_recipe.py says exactly what that means); each of ours is
`tools/train.py --config=CONFIG` in a fresh workdir with a fresh cache folder (no tokenizer,
prepared data or compiled program from an earlier run), timed from its launch: Python and JAX
start-up, tokenizer training, data preparation and compilation are all inside its clock. Each
evaluation's time is when the trainer printed it. The peer's clock starts at its first step, as
nanoGPT's own timing would. Needs `pip install -e '.[hf]'` for the peer. Run it on an idle machine,
or at least a steady one: the load average is reported with each run.
"""
import os
import sys

import functools
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent import futures

from absl import app, flags

_CONFIGS = flags.DEFINE_multi_string("config", ["configs/gpt_tiny.py"], "Our configs to run, in this order; "
                                     "each may carry train.py overrides: 'configs/x.py --config.model.qk_norm=false'.")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE overrides for every one of our runs, e.g. "
                                            "data.train_files=FILE (passed as --config.KEY=VALUE).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/bench_recipe", "Scratch folder for our runs (emptied first).")
_TARGET = flags.DEFINE_float("target", 2.72, "Validation bits per byte to reach (nanoGPT's 1.886 nats/char).")
_AT = flags.DEFINE_float("at_seconds", 60.0, "Also report the bits per byte of the last evaluation by this time.")
_JSON = flags.DEFINE_string("json", "", "Write every history to this JSON file.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Append the markdown table to this file.")
_SKIP_PEER = flags.DEFINE_bool("skip_peer", False, "Run only ours (e.g. without the [hf] extra).")
_PEER_LAST = flags.DEFINE_bool("peer_last", False, "Run the peer after ours instead of before.")
_CONCURRENT = flags.DEFINE_bool("concurrent", False, "Launch every run (the peer's too) at once: on a loaded "
                                                     "machine each then sees the same load.")
_STOP_AFTER = flags.DEFINE_float("stop_after", 0.0, "Stop each of our runs this many seconds after launch "
                                                    "(SIGTERM: it checkpoints and ends); 0: run to the end.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "data", "tinyshakespeare", "input.txt")
_EVAL_LINE = re.compile(r"eval at step (\d+):")


def run_ours(config: str, workdir: str, overrides: list[str], stop_after: float = 0.0, echo: bool = True) -> dict:
    """Trains `config` (a path, then any train.py flags) from a fresh workdir and cache; the
    history's wall times count from launch."""
    shutil.rmtree(workdir, ignore_errors=True)
    path, *flags_given = shlex.split(config)
    command = [sys.executable, "-u", os.path.join(REPO, "tools", "train.py"), f"--config={path}",
               f"--workdir={workdir}", *flags_given] + [f"--config.{kv}" for kv in overrides]
    printed_at = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, LM_CACHE_DIR=cache, PYTHONUNBUFFERED="1")
        launched = time.time()
        with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as process:
            timer = threading.Timer(stop_after, process.terminate) if stop_after else None
            if timer:
                timer.start()
            for line in process.stdout:
                if echo:
                    sys.stdout.write(line)
                match = _EVAL_LINE.search(line)
                if match:
                    printed_at[int(match.group(1))] = time.time() - launched
            if timer:
                timer.cancel()
            if process.wait():
                raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
        ended = time.time() - launched
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if "eval/bits_per_byte" in r]
    history = [{"step": r["step"], "wall_time": printed_at[r["step"]], "val_bits_per_byte": r["eval/bits_per_byte"]}
               for r in evals]
    return {"config": config, "overrides": overrides, "history": history, "wall_time": ended}


def summarise(result: dict, target: float, at_seconds: float) -> dict:
    history = result["history"]
    result["reached"] = next((h for h in history if h["val_bits_per_byte"] < target), None)
    by_then = [h for h in history if h["wall_time"] <= at_seconds]
    result["at_seconds"] = by_then[-1] if by_then else None
    return result


def main(argv):
    del argv
    from diagnostics import benchmark  # noqa: PLC0415

    def peer():
        from diagnostics.peers import char_recipe  # noqa: PLC0415
        with open(CORPUS, encoding="utf-8") as f:
            load = benchmark.load_average()
            result = char_recipe.train(f.read(), target_bits_per_byte=_TARGET.value)
        return dict(result, label="nanoGPT CPU recipe (HF GPT-2, PyTorch eager)", load=load)

    def ours(i, config):
        load = benchmark.load_average()
        result = run_ours(config, os.path.abspath(os.path.join(_WORKDIR.value, str(i))), _SET.value,
                          _STOP_AFTER.value, echo=not _CONCURRENT.value)
        return dict(result, label=f"`{config}`" + "".join(f" {kv}" for kv in _SET.value), load=load)

    jobs = [functools.partial(ours, i, config) for i, config in enumerate(_CONFIGS.value)]
    if not _SKIP_PEER.value:
        jobs.insert(len(jobs) if _PEER_LAST.value else 0, peer)
    with futures.ThreadPoolExecutor(len(jobs) if _CONCURRENT.value else 1) as pool:
        results = list(pool.map(lambda job: job(), jobs))

    at = _AT.value

    def cell(hit):
        return (f"{hit['wall_time']:.0f} s (step {hit['step']}, {hit['val_bits_per_byte']:.3f})" if hit
                else "not reached")

    table = [f"| run | load at start | time to {_TARGET.value} bits/byte | bits/byte at {at:.0f} s | bits/byte at "
             f"the end | wall time |", "| --- | --- | --- | --- | --- | --- |"]
    for result in results:
        summarise(result, _TARGET.value, at)
        by_then = result["at_seconds"]
        table.append(f"| {result['label']} | {result['load']:.1f} | {cell(result['reached'])} | "
                     f"{by_then['val_bits_per_byte'] if by_then else float('nan'):.3f} | "
                     f"{result['history'][-1]['val_bits_per_byte']:.3f} | {result['wall_time']:.0f} s |")
    benchmark.write_report(table, results, _JSON.value, _MARKDOWN.value)


if __name__ == "__main__":
    app.run(main)
