"""Data: text corpora (tfds) -> cleaned text -> sentencepiece tokens -> packed, sharded batches.

Imports neither models nor the trainer; hands out numpy batches."""
