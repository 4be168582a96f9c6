"""What every architecture converter shares: the parameter-name bookkeeping and the layout
changes between PyTorch tensors and our Flax parameters.

Our params are a nested dict (Flax's tree); Hugging Face checkpoints are flat
{"dotted.name": tensor}. A converter reads the flat names it knows, and `take` records every
name it consumed, so an unconverted tensor (a feature we do not model) is an error naming it
instead of being silently dropped. Shape suffixes as in lm/layers.py: D width, H query heads,
K key/value heads, E head dim, F MLP width, V vocabulary.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from lm.config import ConfigError


class ConversionError(ConfigError):
    """A checkpoint or config cannot be converted; the message says what differs and what to do."""


class Tensors:
    """Flat {name: np.ndarray} that remembers which names a converter consumed."""

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str):
        self._tensors = dict(tensors)
        self._used: set[str] = set()
        self.source = source

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self._tensors:
            raise ConversionError(f"{self.source} has no tensor {name!r}: is it a checkpoint of the architecture its "
                                  f"config.json names? (it has e.g. {', '.join(sorted(self._tensors)[:4])})")
        value = np.asarray(self._tensors[name], dtype=np.float32)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(f"{self.source}: tensor {name!r} has shape {tuple(value.shape)}, but its "
                                  f"config.json implies {tuple(shape)}")
        self._used.add(name)
        return value

    def check_all_used(self, ignore: Iterable[str] = ()) -> None:
        """Raises if a tensor was not converted (apart from names ending in one of `ignore`)."""
        ignored = tuple(ignore)
        left = sorted(n for n in self._tensors if n not in self._used and not n.endswith(ignored))
        if left:
            raise ConversionError(f"{self.source} has {len(left)} tensor(s) this converter does not map, e.g. "
                                  f"{', '.join(left[:4])}: the checkpoint uses a feature our model lacks")


def linear_to_kernel(weight_OI: np.ndarray) -> np.ndarray:
    """torch.nn.Linear stores [out, in]; our kernels are [in, out]."""
    return np.ascontiguousarray(weight_OI.T)


def kernel_to_linear(kernel_IO: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(kernel_IO).T)


def split_heads(kernel_DX: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """[D, heads * E] -> [D, heads, E] (query/key/value projections)."""
    return kernel_DX.reshape(kernel_DX.shape[0], heads, head_dim)


def merge_heads(kernel_DHE: np.ndarray) -> np.ndarray:
    return np.asarray(kernel_DHE).reshape(kernel_DHE.shape[0], -1)


def split_out_heads(kernel_XD: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """[heads * E, D] -> [H, E, D] (the attention output projection)."""
    return kernel_XD.reshape(heads, head_dim, kernel_XD.shape[-1])


def merge_out_heads(kernel_HED: np.ndarray) -> np.ndarray:
    return np.asarray(kernel_HED).reshape(-1, kernel_HED.shape[-1])


def unstack_layers(params: dict) -> dict:
    """A `model.scan_layers` tree keeps a stack's blocks once, under `layers`, with a leading
    layer axis (GPT: decoder/layers/..., BERT: encoder/layers/layers/...); this puts per-layer
    `layer_i` subtrees in its place, the layout the converters read and write."""
    import jax  # noqa: PLC0415

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        block = tree.get("layers")
        if not (isinstance(block, dict) and "self_attention" in block):  # not a scanned stack
            return {name: walk(child) for name, child in tree.items()}
        count = jax.tree.leaves(block)[0].shape[0]
        rest = {name: walk(child) for name, child in tree.items() if name != "layers"}
        return {**rest, **{f"layer_{i}": jax.tree.map(lambda x, i=i: np.asarray(x)[i], block) for i in range(count)}}

    return walk(params)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConversionError(message)


def unsupported_settings(m, wanted: tuple, architecture: str) -> list[str]:
    """'model.x=... (ARCH needs ...)' for every (field, value) of `wanted` that `m` does not have."""
    return [f"model.{name}={getattr(m, name)!r} ({architecture} needs {want!r})" for name, want in wanted
            if getattr(m, name) != want]


def check_tied_head(tensors: "Tensors", embedding: np.ndarray, message: str) -> None:
    """A saved `lm_head.weight` of a tied model must be the embedding itself (it is consumed here)."""
    if "lm_head.weight" in tensors:
        require(np.array_equal(tensors.take("lm_head.weight", embedding.shape), embedding), message)
