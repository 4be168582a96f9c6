"""Hugging Face checkpoint directories: config.json plus safetensors, read and written here.

The safetensors format is simple enough to read and write directly (an 8-byte little-endian
header length, a JSON header of name -> dtype, shape and byte range, then the raw bytes), so
conversion needs neither torch nor the safetensors package, and bfloat16 checkpoints load
through ml_dtypes (a jax dependency). Pickled `pytorch_model.bin` files are refused: loading a
pickle runs arbitrary code.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np

from lm.interop.core import ConversionError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
WEIGHTS_NAME, INDEX_NAME = "model.safetensors", "model.safetensors.index.json"


def read_file(path: str) -> dict[str, np.ndarray]:
    """{name: array} of one .safetensors file (arrays share one buffer read from disk)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ConversionError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which we cannot read")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data, _DTYPES[info["dtype"]], offset=start,
                                      count=(end - start) // np.dtype(_DTYPES[info["dtype"]]).itemsize
                                      ).reshape(info["shape"])
    return tensors


def write_file(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes tensors (sorted by name, 8-byte aligned header) atomically."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in _NAMES:
            raise ConversionError(f"cannot write tensor {name!r} of dtype {array.dtype} to safetensors")
        blob = array.tobytes()
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read_hf_dir(hf_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, {name: array}) of a Hugging Face model directory, single-file
    or sharded (`model.safetensors.index.json`)."""
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(config_path):
        raise ConversionError(f"{hf_dir!r} has no config.json: give a directory written by transformers' "
                              f"save_pretrained (or downloaded from the hub)")
    with open(config_path) as f:
        hf_config = json.load(f)
    single, index = os.path.join(hf_dir, WEIGHTS_NAME), os.path.join(hf_dir, INDEX_NAME)
    if os.path.exists(single):
        return hf_config, read_file(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(read_file(os.path.join(hf_dir, shard)))
        return hf_config, tensors
    if any(name.endswith((".bin", ".pt", ".pth")) for name in os.listdir(hf_dir)):
        raise ConversionError(
            f"{hf_dir!r} holds only pickled PyTorch weights, which we never load (unpickling runs arbitrary code). "
            f"Convert them to safetensors first, e.g. in Python: model = AutoModelForCausalLM.from_pretrained(DIR); "
            f"model.save_pretrained(DIR2) (transformers writes safetensors by default)")
    raise ConversionError(f"{hf_dir!r} has no {WEIGHTS_NAME} or {INDEX_NAME}")


def write_hf_dir(hf_dir: str, hf_config: dict, tensors: Mapping[str, np.ndarray]) -> None:
    os.makedirs(hf_dir, exist_ok=True)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    write_file(os.path.join(hf_dir, WEIGHTS_NAME), tensors)
