"""Weights & Biases logging (logging.wandb), run offline and read back from the run's own file."""

import glob
import json
import struct

import pytest

from lm import metrics as metrics_lib
from tests.conftest import small_config

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of records with 7-byte headers


def _wandb_records(path):
    """The protobuf Records of an offline run's run-<id>.wandb file."""
    from wandb.proto import wandb_internal_pb2  # noqa: PLC0415

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", "not a W&B run file"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if _BLOCK - position % _BLOCK < 7:  # a block's tail too short for a header is padding
            position += _BLOCK - position % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B stores some keys ("step" among them) as nested keys


def test_offline_wandb_run_holds_the_scalars_and_the_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lm import trainer

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = str(tmp_path / "run")
    trainer.train(small_config(**{"train.steps": 10, "eval.every_steps": 10, "logging.wandb": True,
                                  "logging.wandb_project": "lm-test"}), workdir)
    [path] = glob.glob(f"{workdir}/wandb/offline-run-*/run-*.wandb")
    history, config, summary = [], {}, {}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({_key(item): json.loads(item.value_json) for item in updates})
        elif kind == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
    # One W&B history row per metrics.jsonl record, in order, with the same step and values.
    logged = metrics_lib.read_records(workdir)
    assert {"train/loss", "train/mfu", "eval/bits_per_byte", "time/compile"} <= {key for r in logged for key in r}
    assert len(history) == len(logged)
    for record, row in zip(logged, history):
        assert row["step"] == record["step"]
        for key, value in record.items():
            if key not in ("step", "wall_time"):
                assert row[key] == pytest.approx(value, rel=1e-6), (record["step"], key)
    assert config["model"]["num_layers"] == 2 and config["logging"]["wandb_project"] == "lm-test"
    assert "sample" in summary
