"""The device mesh and the rules that place logical axes on it.

Models name logical axes (`batch`, `length`, `embed`, `heads`, `kv`, `mlp`, `vocab`,
`layers`); this module alone knows the mesh axes:
  data    replicated parameters, batch split (data parallel)
  fsdp    batch split and parameters/optimizer state sharded along `embed` (ZeRO-3 style)
  tensor  attention heads, MLP width and vocabulary split (Megatron-style tensor parallel)
"""

from __future__ import annotations

import contextlib
import math
import warnings

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lm.config import ConfigError, MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. A mesh axis is used at most once per array: where two logical
# axes of one array claim it, the first wins (so activations' `embed` stays whole).
RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("layers", None),
)


def mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, ...]:
    """Resolves -1 and checks that the mesh covers exactly the devices."""
    sizes = [getattr(config, axis) for axis in MESH_AXES]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"the mesh axes {dict(zip(MESH_AXES, sizes))} fix {known} devices, which does not "
                              f"divide the {num_devices} devices: choose sizes whose product divides {num_devices}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"the mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
                          f"{num_devices} are present: make the sizes multiply to {num_devices} (or set one to -1)")
    return tuple(sizes)


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(config, len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError) as error:
        # e.g. a subset of devices, or CPU devices: plain order. On TPU/GPU that may put fsdp or tensor
        # parallelism across slow links, so say so.
        if devices[0].platform != "cpu":
            warnings.warn(f"mesh {dict(zip(MESH_AXES, shape))}: no topology-aware layout for these devices "
                          f"({type(error).__name__}: {error}); using plain device order")
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def logical_shardings(boxed_tree, mesh: Mesh):
    """NamedShardings for a tree whose leaves are flax `LogicallyPartitioned` boxes (or plain
    leaves, which are replicated). Checks every sharded dimension divides its mesh axes."""
    specs = nn.get_partition_spec(boxed_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, RULES)
    shapes = nn.meta.unbox(boxed_tree)
    for (key, leaf), sharding in zip(
            jax.tree_util.tree_flatten_with_path(shapes)[0],
            jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))):
        for dim, axes in zip(leaf.shape, sharding.spec):
            if axes is None:
                continue
            axes = (axes,) if isinstance(axes, str) else axes
            size = math.prod(mesh.shape[a] for a in axes)
            if dim % size:
                raise ConfigError(
                    f"parameter {jax.tree_util.keystr(key)} has a dimension of {dim}, which does not divide over "
                    f"mesh axes {axes} of size {size}: change the mesh or the model width/heads/vocab")
    return shardings


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches split their leading axis over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activation_rules(mesh: Mesh):
    """Context in which a model's `nn.with_logical_constraint` calls shard activations. flax
    reads the mesh from `jax.set_mesh` (a bare `with mesh:` leaves its constraints no-ops)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        yield


def to_global(batch: dict, mesh: Mesh) -> dict:
    """This process's rows of a batch -> global jax.Arrays sharded over the data axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
