"""Metrics people look at: TensorBoard event files read back by TensorBoard's own reader
(scalars and the config text), and tools/plot.py's PNG of a real run's curves."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


def test_tensorboard_reads_our_scalars_and_config(trained_tiny_workdir):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    tensor_util = pytest.importorskip("tensorboard.util.tensor_util")
    reader = event_accumulator.EventAccumulator(os.path.join(trained_tiny_workdir, "tensorboard"),
                                                size_guidance={event_accumulator.SCALARS: 0,
                                                               event_accumulator.TENSORS: 0})
    reader.Reload()
    with open(os.path.join(trained_tiny_workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for name in ("train/loss", "train/learning_rate", "eval/loss", "eval/bits_per_byte"):
        expected = {r["step"]: r[name] for r in records if name in r}
        events = {e.step: e.value for e in reader.Scalars(name)}
        assert expected and events.keys() == expected.keys(), name
        np.testing.assert_allclose([events[s] for s in expected], list(expected.values()), rtol=1e-6)
    texts = {tag: b"".join(tensor_util.make_ndarray(e.tensor_proto).flatten()).decode()
             for tag in reader.Tags()["tensors"] for e in reader.Tensors(tag)}
    config_text = next(text for tag, text in texts.items() if tag.startswith("config"))
    assert "| model.num_layers | 2 |" in config_text and "| optimizer.learning_rate | 0.003 |" in config_text


def test_plot_tool_draws_curves(trained_tiny_workdir, tmp_path):
    output = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, "tools/plot.py", trained_tiny_workdir,
                             f"--output={output}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import matplotlib.image  # noqa: PLC0415

    pixels = matplotlib.image.imread(output)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600 and pixels.std() > 0.05, "a blank or tiny image"
    missing = subprocess.run([sys.executable, "tools/plot.py", str(tmp_path)], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode != 0 and "no metrics.jsonl" in missing.stderr
