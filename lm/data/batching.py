"""Global batches for one process, the one grain chain every task's data goes through.

source -> (shuffle, repeat) -> (random_map) -> this process's slice -> batch. The per-example
random map comes before the slice, so example k's randomness (masking, corruption, NSP
partners) depends on k alone, not on how many processes share the work. The iterator's state
is one index: `get_state()` / `set_state()` resume it exactly.
"""

from __future__ import annotations

import grain

from lm.config import ConfigError


def check_batch(global_batch: int, process_count: int, what: str) -> None:
    if global_batch % process_count:
        raise ConfigError(f"{what}={global_batch} does not divide into {process_count} processes: "
                          f"use a multiple of {process_count}")


def batched(source, global_batch: int, process_index: int, process_count: int, *, seed: int | None,
            prefetch: int = 4, random_map=None, random_seed: int | None = None, what: str = "train.batch_size"):
    """Endless shuffled batches (seed given) or one ordered pass (seed None) of `source`, a
    random-access sequence; `random_map(example, rng)` is seeded by `random_seed` (default:
    `seed`, else 0) and the example's index."""
    check_batch(global_batch, process_count, what)
    dataset = grain.MapDataset.source(source)
    if seed is not None:
        if len(source) < global_batch:
            raise ConfigError(f"the training split makes {len(source)} examples, fewer than {what}="
                              f"{global_batch}: give more data or lower the batch size")
        dataset = dataset.shuffle(seed=seed).repeat()
    if random_map is not None:
        dataset = dataset.random_map(random_map, seed=random_seed if random_seed is not None else seed or 0)
    dataset = dataset[process_index::process_count].batch(global_batch // process_count, drop_remainder=True)
    options = grain.ReadOptions(num_threads=min(2, max(prefetch, 1)), prefetch_buffer_size=max(prefetch, 1))
    return dataset.to_iter_dataset(options)


def eval_pass(source, num_examples: int, global_batch: int, max_batches: int, process_index: int,
              process_count: int, *, random_map=None, random_seed: int = 0):
    """One ordered pass over the first `num_examples` of `source`, padded to whole batches
    (eval.max_batches caps their number; 0: all). The one evaluation pass of every task.

    Padding keeps the batch shape static (one compiled eval step) and gives every process the
    same number of batches, so none waits in a collective the others never reach. The contract:
    `source[i]` for i >= num_examples is a row whose weights are all 0."""
    check_batch(global_batch, process_count, "eval.batch_size")
    num_batches = -(-num_examples // global_batch)
    if max_batches:
        num_batches = min(num_batches, max_batches)
    dataset = grain.MapDataset.range(num_batches * global_batch).map(source.__getitem__)
    if random_map is not None:
        dataset = dataset.random_map(random_map, seed=random_seed)
    dataset = dataset[process_index::process_count].batch(global_batch // process_count, drop_remainder=True)
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
