"""Time to 2.72 validation bits per byte on tiny-shakespeare: nanoGPT's CPU recipe against our
main command, one after the other on this machine, in one run.

  python tools/bench_recipe.py [--workdir=runs/bench_recipe] [--json=FILE] [--markdown=FILE]

The peer is nanoGPT's documented CPU recipe with Hugging Face's GPT-2 as its model
(diagnostics/peers/char_recipe.py says exactly what that means); ours is
`tools/train.py --config=configs/gpt_tiny.py` in a fresh workdir, as the README's first command
runs it (its wall time includes start-up and compilation; the peer's clock starts at its first
step, as nanoGPT's own timing would). Needs `pip install -e '.[hf]'`. Run it on an idle machine:
two processes at a time would measure the contention, not the code.
"""
import json
import os
import shutil
import subprocess
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/bench_recipe", "Scratch workdir for our run (emptied first).")
_TARGET = flags.DEFINE_float("target", 2.72, "Validation bits per byte to reach (nanoGPT's 1.886 nats/char).")
_JSON = flags.DEFINE_string("json", "", "Write both histories to this JSON file.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Append the markdown table to this file.")
_SKIP_PEER = flags.DEFINE_bool("skip_peer", False, "Run only ours (e.g. without the [hf] extra).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "data", "tinyshakespeare", "input.txt")


def run_ours(workdir: str, target: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), "--config=configs/gpt_tiny.py",
                    f"--workdir={workdir}"], cwd=REPO, check=True)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if "eval/bits_per_byte" in r]
    history = [{"step": r["step"], "wall_time": r["wall_time"], "val_bits_per_byte": r["eval/bits_per_byte"]}
               for r in evals]
    reached = next((h for h in history if h["val_bits_per_byte"] < target), None)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        end = max(r["wall_time"] for r in map(json.loads, f))
    return {"history": history, "reached": reached, "wall_time": end}


def main(argv):
    del argv
    from diagnostics import benchmark  # noqa: PLC0415
    from diagnostics.peers import char_recipe  # noqa: PLC0415

    results = {}
    if not _SKIP_PEER.value:
        with open(CORPUS, encoding="utf-8") as f:
            results["peer"] = char_recipe.train(f.read(), target_bits_per_byte=_TARGET.value)
    results["ours"] = run_ours(os.path.abspath(_WORKDIR.value), _TARGET.value)

    def cell(result):
        hit = result["reached"]
        return f"{hit['wall_time']:.0f} s (step {hit['step']}, {hit['val_bits_per_byte']:.3f})" if hit else "not reached"

    table = [f"| | time to {_TARGET.value} bits/byte | best bits/byte | wall time to the end |", "| --- | --- | --- | --- |"]
    for name, label in (("peer", "nanoGPT CPU recipe (HF GPT-2, PyTorch eager)"), ("ours", "`lm` gpt_tiny")):
        if name in results:
            r = results[name]
            best = min(h["val_bits_per_byte"] for h in r["history"])
            table.append(f"| {label} | {cell(r)} | {best:.3f} | {r['wall_time']:.0f} s |")
    benchmark.write_report(table, results, _JSON.value, _MARKDOWN.value)


if __name__ == "__main__":
    app.run(main)
