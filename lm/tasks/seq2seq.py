"""Text-to-text fine-tuning of an encoder-decoder (T5): input text -> target text.

Teacher-forced cross-entropy on the target tokens of packed rows (lm/data/seq2seq.py); the
loss, metrics and end-of-run sample are shared with span corruption, which differs only in
where its rows come from. BLEU and ROUGE need decoding and are tools/evaluate.py's job.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from lm import losses
from lm.config import Config
from lm.data import batching
from lm.data import seq2seq as seq2seq_data


class EncoderDecoderTask:
    """Loss and metrics of any task whose batches are packed seq2seq rows."""

    def __init__(self, config: Config):
        self.config = config

    def init_inputs(self):
        s2s = self.config.seq2seq
        return (jnp.zeros((1, s2s.input_len), jnp.int32), jnp.zeros((1, s2s.target_len), jnp.int32))

    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        logits = model.apply({"params": params}, batch["encoder_inputs"], batch["decoder_inputs"],
                             batch["encoder_segment_ids"], batch["encoder_positions"], batch["decoder_segment_ids"],
                             batch["decoder_positions"], deterministic=deterministic,
                             rngs=None if deterministic else {"dropout": rng})
        # z-loss is a training term whether or not dropout runs; eval_sums drops it.
        return losses.cross_entropy(logits, batch["decoder_targets"], batch["decoder_weights"],
                                    self.config.train.z_loss)

    def total_weight(self, batch):
        return jnp.sum(batch["decoder_weights"])

    def train_metrics(self, sums, total_weight) -> dict:
        return {"accuracy": sums["correct"] / total_weight}

    def eval_sums(self, model, params, batch) -> dict:
        sums = self.loss_sums(model, params, batch, None, True)
        del sums["z_loss_sum"]
        return sums

    def eval_metrics(self, totals) -> dict[str, float]:
        """Target-token loss (nats), perplexity and accuracy under teacher forcing."""
        loss = totals["loss_sum"] / max(totals["weight"], 1.0)
        return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0)),
                "eval/accuracy": totals["correct"] / max(totals["weight"], 1.0)}

    def sample_pairs(self, corpus) -> list[tuple[str, str]]:
        """(input text, reference text) pairs the end-of-run sample decodes."""
        raise NotImplementedError

    def decode_config(self):
        """How the end-of-run sample decodes."""
        from lm import decoding  # noqa: PLC0415

        return decoding.DecodeConfig.from_config(self.config.seq2seq)

    def sample(self, run, params) -> str:
        from lm import decoding  # noqa: PLC0415

        pairs = self.sample_pairs(run.corpus)
        predictions = decoding.decode_texts(run.model, params, run.corpus.tokenizer, [a for a, _ in pairs],
                                            self.decode_config())
        return "\n\n".join(f"input:      {a}\nreference:  {b}\nprediction: {p}" for (a, b), p in zip(pairs, predictions))


class Seq2Seq(EncoderDecoderTask):
    def prepare(self) -> seq2seq_data.PairCorpus:
        return seq2seq_data.prepare(self.config)

    def train_iterator(self, corpus, process_index: int = 0, process_count: int = 1):
        c, s2s = self.config, self.config.seq2seq
        rows = seq2seq_data.train_rows(corpus.train, s2s.input_len, s2s.target_len, corpus.tokenizer.pad_id, c.data.seed)
        return iter(batching.batched(rows, c.train.batch_size, process_index, process_count, seed=c.data.seed,
                                         prefetch=c.data.prefetch))

    def eval_batches(self, corpus, process_index: int = 0, process_count: int = 1):
        c, s2s = self.config, self.config.seq2seq
        batch = c.eval.batch_size or c.train.batch_size
        rows = seq2seq_data.eval_rows(corpus.validation, s2s.input_len, s2s.target_len, corpus.tokenizer.pad_id,
                                      batch, c.eval.max_batches)
        return batching.batched(rows, batch, process_index, process_count, seed=None)

    def sample_pairs(self, corpus) -> list[tuple[str, str]]:
        return corpus.validation.texts[:2]
