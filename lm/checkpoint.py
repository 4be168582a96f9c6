"""Orbax checkpoints of the train state and the data iterator's position, verified on restore.

A step directory holds `state` (params, optimizer state, step, RNG; sharded arrays written
by every process), `data` (the grain iterator state, JSON) and `fingerprint` (JSON: a checksum
of every state leaf's bits and of the data state). Saves are asynchronous and atomic (orbax
commits a step only when it is complete), so a run killed mid-save restores from the previous
step. On restore the checksums are recomputed from what was read: a truncated, half-written
or tampered checkpoint (or one that fails to read at all) is reported, moved aside to
`<checkpoints>.corrupt/`, and the previous step is tried instead. A state with NaN or Inf
parameters or optimizer state is never written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from lm import storage
from lm.config import CheckpointConfig
from lm.workdir import RunError

_FINGERPRINT_VERSION = 1
_GOLDEN = np.uint32(2654435761)  # Knuth's multiplicative hash constant: weights each element by position.


class CheckpointError(RunError):
    """A checkpoint cannot be written or none can be restored; the message says why and what to do."""


def _leaf_fingerprint(x):
    """(sum of the element bits, position-weighted sum of the bits), both mod 2^32, and whether all
    elements are finite. Integer sums are exact and order-free, so the result is the same on any
    mesh or sharding: a checkpoint saved on one mesh verifies when restored onto another."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    position = jnp.arange(x.size, dtype=jnp.uint32).reshape(x.shape) * _GOLDEN + jnp.uint32(1)
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.bool_(True)
    return jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * position, dtype=jnp.uint32), finite


_fingerprint_leaves = jax.jit(lambda leaves: [_leaf_fingerprint(x) for x in leaves])


def fingerprint(state, data_state: dict | None = None) -> dict:
    """{"leaves": {path: [sum, weighted sum]}, "nonfinite": [paths], "data_sha256": ...} for a
    state (a pytree of arrays) and the data iterator's state. Exact: any changed bit shows."""
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    sums = jax.device_get(_fingerprint_leaves([leaf for _, leaf in paths_and_leaves]))
    leaves, nonfinite = {}, []
    for (path, _), (total, weighted, finite) in zip(paths_and_leaves, sums):
        name = jax.tree_util.keystr(path)
        leaves[name] = [int(total), int(weighted)]
        if not bool(finite):
            nonfinite.append(name)
    data_json = json.dumps(data_state, sort_keys=True) if data_state is not None else ""
    return {"version": _FINGERPRINT_VERSION, "leaves": leaves, "nonfinite": nonfinite,
            "data_sha256": hashlib.sha256(data_json.encode()).hexdigest()}


class Checkpointer:
    def __init__(self, directory: str, config: CheckpointConfig, log: Callable[[str], None] = print,
                 best_metric: str = "eval/loss", higher_is_better: bool = False, read_only: bool = False):
        """`read_only` for readers of another run's checkpoints (evaluation, generation, init_from):
        they must neither create the directory nor clean up the temporary directory of a save
        that run may have in flight."""
        policies = [checkpoint_managers.LatestN(n=config.keep)]
        if config.keep_best:
            sign = 1.0 if higher_is_better else -1.0
            policies.append(checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: sign * metrics[best_metric], n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_save and not read_only, create=not read_only,
            cleanup_tmp_directories=not read_only, read_only=read_only)
        self.directory = storage.absolute(directory)  # a local path or a URL (gs://...): orbax takes both
        self.corrupt_directory = self.directory.rstrip("/") + ".corrupt"
        self.log = log
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict | None, metrics: dict | None = None) -> None:
        """Writes `step` (asynchronously if configured). Refuses a state with non-finite values."""
        prints = fingerprint(state, data_state)
        if prints["nonfinite"]:
            raise CheckpointError(f"refusing to write the checkpoint at step {step}: non-finite values in "
                                  f"{', '.join(prints['nonfinite'][:5])}; the newest good checkpoint is "
                                  f"step {self.latest_step()}")
        items = {"state": ocp.args.StandardSave(state), "fingerprint": ocp.args.JsonSave(prints)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        except Exception as error:  # noqa: BLE001 (orbax raises what the filesystem raised, or its own wrapper)
            raise CheckpointError(save_failure(error, self.directory, self.latest_step())) from None

    def restore(self, step: int, abstract_state, with_data: bool = True):
        """Restores into `abstract_state`'s shapes, dtypes and shardings (a tree of
        jax.ShapeDtypeStruct), so a checkpoint loads onto any mesh, and verifies what was read
        against the fingerprint saved with it. Returns (state, data_state); raises
        CheckpointError if the checkpoint is unreadable or does not match its fingerprint."""
        try:
            names = set(self.manager.item_metadata(step).keys())
        except Exception as error:  # noqa: BLE001 (orbax raises many kinds on a damaged directory)
            raise CheckpointError(f"step {step}: cannot read its metadata ({brief(error)})") from error
        if "fingerprint" not in names:
            raise CheckpointError(f"step {step}: it has no fingerprint item, so what it holds cannot be verified")
        items = {"state": ocp.args.StandardRestore(abstract_state), "fingerprint": ocp.args.JsonRestore()}
        if "data" in names:
            items["data"] = ocp.args.JsonRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"step {step}: reading it failed ({brief(error)})") from error
        state, data_state, saved = restored["state"], restored.get("data"), restored["fingerprint"]
        actual = fingerprint(state, data_state)
        if not isinstance(saved, dict) or saved.get("version") != _FINGERPRINT_VERSION:
            raise CheckpointError(f"step {step}: its fingerprint is unreadable or of an unknown version")
        wrong = sorted(k for k in set(saved["leaves"]) | set(actual["leaves"])
                       if saved["leaves"].get(k) != actual["leaves"].get(k))
        if wrong:
            raise CheckpointError(f"step {step}: {len(wrong)} array(s) differ from what was saved "
                                  f"(checksum mismatch in {', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''})")
        if saved["data_sha256"] != actual["data_sha256"]:
            raise CheckpointError(f"step {step}: the data iterator state differs from what was saved")
        if actual["nonfinite"]:
            raise CheckpointError(f"step {step}: non-finite values in {', '.join(actual['nonfinite'][:3])}")
        return state, data_state if with_data else None

    def restore_params(self, step: int, abstract_params):
        """Only the params of checkpoint `step` (no optimizer state: readers of a trained run
        need neither its optimizer nor its memory), into `abstract_params`' shapes and
        shardings, verified against the params' part of the saved fingerprint."""
        try:
            saved = self.manager.restore(step, args=ocp.args.Composite(fingerprint=ocp.args.JsonRestore()))["fingerprint"]
            target = {"params": abstract_params}
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True)))["state"]
        except Exception as error:  # noqa: BLE001 (orbax raises many kinds on a damaged directory)
            raise CheckpointError(f"step {step}: reading its params failed ({brief(error)})") from error
        params = restored["params"]
        # The state was fingerprinted as a TrainState (".params..."), the params alone as "['params']...".
        actual = {".params" + k[len("['params']"):]: v for k, v in fingerprint({"params": params})["leaves"].items()}
        expected = {k: v for k, v in saved["leaves"].items() if k.startswith(".params")}
        wrong = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        if wrong:
            raise CheckpointError(f"step {step}: {len(wrong)} parameter array(s) differ from what was saved "
                                  f"(checksum mismatch in {', '.join(wrong[:3])})")
        return params

    def restore_latest(self, abstract_state):
        """The newest checkpoint that reads back exactly as saved: (step, state, data_state), or
        None if there is none. Bad ones are reported and moved aside, oldest fallback last;
        raises CheckpointError if checkpoints exist but none is good."""
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                state, data_state = self.restore(step, abstract_state)
            except CheckpointError as error:
                moved = self._move_aside(step)
                self.log(f"WARNING: checkpoint {error}. Moved it to {moved}; trying the previous checkpoint.")
                continue
            return step, state, data_state
        if steps:
            raise CheckpointError(f"none of the checkpoints in {self.directory} (steps {steps}) is intact; they were "
                                  f"moved to {self.corrupt_directory}. Rerun to start from scratch.")
        return None

    def _move_aside(self, step: int) -> str:
        target = storage.join(self.corrupt_directory, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_index() == 0:
            storage.makedirs(self.corrupt_directory)
            storage.move(storage.join(self.directory, str(step)), target)
        if jax.process_count() > 1:  # every host re-reads the directory only once the move is done
            multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        self.manager.reload()
        return target

    def check_for_errors(self) -> None:
        """Raises CheckpointError at once if a background save has failed (a full disk, a lost
        mount), rather than at the next save: the run would otherwise go on unprotected."""
        try:
            self.manager.check_for_errors()
        except Exception as error:  # noqa: BLE001 (orbax re-raises whatever the save thread hit)
            raise CheckpointError(save_failure(error, self.directory, self.latest_step())) from None

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(save_failure(error, self.directory, self.latest_step())) from None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def save_failure(error: BaseException, directory: str, previous: int | None) -> str:
    """What a failed checkpoint save means for the user: the cause, what is still safe, the fix."""
    cause = next((e for e in _chain(error) if isinstance(e, OSError)), error)
    kept = (f"the previous checkpoint, step {previous}, is intact" if previous is not None else
            "no earlier checkpoint exists")
    full = getattr(cause, "errno", None) == errno.ENOSPC or "No space left on device" in str(cause)
    hint = f": the disk is full, free space on that filesystem (df -h {directory})" if full else ""
    return (f"writing a checkpoint to {directory} failed ({type(cause).__name__}: {cause}){hint}; {kept}. "
            f"Run the same command again to resume from it.")


def brief(error: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line: orbax's read errors carry the whole TensorStore spec (some
    sixty lines of JSON), which buries the cause; the damaged checkpoint is kept for a closer look."""
    message, _, details = str(error).partition("See full TensorStore details")
    message = " ".join(message.split()).rstrip(".")
    if len(message) > limit:
        message = message[:limit].rstrip() + " ..."
    # The spec's relative kvstore path names the array that failed ("opt_state.1.0.mu.decoder...").
    arrays = re.findall(r"'path': '([^'/][^']*?)/?'", details)
    return f"{type(error).__name__}: {message}" + (f" (array {arrays[-1]})" if arrays else "")


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def shape_changes(directory: str, step: int, abstract_params) -> list[str] | None:
    """["path: saved shape -> now shape"] for each parameter of checkpoint `step` in `directory`
    whose shape differs from `abstract_params` (or that only one of them has); None when its
    metadata cannot be read (a damaged checkpoint, for `restore_latest` to report). Reads no arrays."""
    try:
        tree = ocp.StandardCheckpointHandler().metadata(epath.Path(directory) / str(step) / "state").tree
        saved = {jax.tree_util.keystr(p): list(leaf.shape)
                 for p, leaf in jax.tree_util.tree_flatten_with_path(tree["params"])[0]}
    except Exception:  # noqa: BLE001 (orbax raises many kinds on a damaged directory)
        return None
    now = {jax.tree_util.keystr(p): list(leaf.shape)
           for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    return [f"params{k}: {saved.get(k, '(absent)')} -> {now.get(k, '(absent)')}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)
