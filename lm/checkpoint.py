"""Orbax checkpoints of the train state and the data iterator's position.

A step directory holds `state` (params, optimizer state, step, RNG; sharded arrays written
by every process) and `data` (the grain iterator state, JSON). Saves are asynchronous and
atomic (orbax commits a step only when it is complete), so a run killed mid-save restores
from the previous step.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from lm.config import CheckpointConfig


class Checkpointer:
    def __init__(self, directory: str, config: CheckpointConfig):
        policies = [checkpoint_managers.LatestN(n=config.keep)]
        if config.keep_best:
            policies.append(checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: -metrics["eval/loss"], n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_save, create=True, cleanup_tmp_directories=True)
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict | None, metrics: dict | None = None) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore(self, step: int, abstract_state, with_data: bool = True):
        """Restores into `abstract_state`'s shapes, dtypes and shardings (a tree of
        jax.ShapeDtypeStruct), so a checkpoint loads onto any mesh. Returns (state, data_state)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if with_data and "data" in self.manager.item_metadata(step):
            items["data"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored.get("data") if with_data else None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)
