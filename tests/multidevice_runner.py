"""Trains a tiny model for a few steps on one or more meshes and saves what the tests compare.

Run in a fresh process (XLA_FLAGS device count must be set before jax is imported):

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/multidevice_runner.py \
      --out=/tmp/r --overrides='{"model.num_heads": 8}' --mesh=data=8 --mesh=fsdp=8 [multi-host flags]

For each --mesh (default: the config's), writes OUT/<mesh name>.npz (process 0 only) with
`losses` (per step), every parameter gathered to the host as `param/<path>`, and
`shard/<path>`: the shape of the parameter's shard on this process's first device.
Uses the real lm code path: assembly.build (mesh, shardings, jit), pipeline.train_iterator
for this process's rows, sharding.to_global, sharding.activation_rules.
"""

import argparse
import dataclasses
import json
import os


def small_config(overrides: dict):
    from configs import gpt_tiny
    from lm import config as config_lib

    config = gpt_tiny.get_config()
    values = {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 8, "model.mlp_dim": 256,
        "model.max_len": 64, "data.seq_len": 64, "tokenizer.vocab_size": 512, "train.batch_size": 8,
        "train.steps": 20, "optimizer.warmup_steps": 5, "data.prefetch": 1,
    }
    return config_lib.from_config_dict(config, {**values, **overrides})


def parse_mesh(text: str) -> dict:
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, text.split(",")):
        name, value = part.split("=")
        sizes[name] = int(value)
    return sizes


def train_on_mesh(config, steps: int):
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from lm import assembly, sharding
    from lm.data import pipeline

    run = assembly.build(config)
    it = pipeline.train_iterator(run.data, config.data.seq_len, config.train.batch_size, config.data.seed,
                                 jax.process_index(), jax.process_count(), config.data.prefetch)
    losses = []
    with sharding.activation_rules(run.mesh):
        state = run.init_fn()
        for _ in range(steps):
            state, metrics = run.train_step(state, sharding.to_global(next(it), run.mesh))
            losses.append(metrics["loss"])
    losses = [float(x) for x in jax.device_get(losses)]
    result = {"losses": np.asarray(losses, np.float64)}
    flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        result[f"shard/{name}"] = np.asarray(leaf.addressable_shards[0].data.shape)
        if jax.process_count() > 1:
            result[f"param/{name}"] = np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        else:
            result[f"param/{name}"] = np.asarray(jax.device_get(leaf))
    result["mesh"] = np.asarray([run.mesh.shape[a] for a in sharding.MESH_AXES])
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--overrides", default="{}")
    parser.add_argument("--mesh", action="append", default=[])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--coordinator_address", default="")
    parser.add_argument("--num_processes", type=int, default=0)
    parser.add_argument("--process_id", type=int, default=-1)
    args = parser.parse_args()

    from lm import distributed

    distributed.initialize(distributed.DistributedConfig(args.coordinator_address, args.num_processes,
                                                         args.process_id))
    import jax
    import numpy as np

    from lm.config import MeshConfig

    os.makedirs(args.out, exist_ok=True)
    base = small_config(json.loads(args.overrides))
    for mesh_text in args.mesh or [""]:
        config = base
        if mesh_text:
            config = dataclasses.replace(base, mesh=MeshConfig(**parse_mesh(mesh_text)))
        result = train_on_mesh(config, args.steps)
        name = mesh_text.replace(",", "_").replace("=", "") or "default"
        if jax.process_index() == 0:
            np.savez(os.path.join(args.out, f"{name}.npz"), **result)
        print(f"mesh {mesh_text or 'default'}: devices {jax.device_count()} processes {jax.process_count()} "
              f"losses {result['losses'][0]:.5f} .. {result['losses'][-1]:.5f}", flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main()
