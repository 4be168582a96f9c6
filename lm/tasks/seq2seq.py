"""Text-to-text fine-tuning of an encoder-decoder (T5): input text -> target text.

Teacher-forced cross-entropy on the target tokens of packed rows (lm/data/seq2seq.py); the
objective and the end-of-run sample are shared with T5's pretraining objectives
(lm/tasks/span_corruption.py), which differ only in where their rows come from. BLEU and
ROUGE need decoding and are tools/evaluate.py's job.
"""

from __future__ import annotations

import jax.numpy as jnp

from lm import losses
from lm.data import batching
from lm.data import seq2seq as seq2seq_data
from lm.tasks import base


class EncoderDecoderObjective(base.Objective):
    """Loss and metrics of any objective whose batches are packed encoder-decoder rows."""

    def input_lengths(self) -> tuple[int, int]:
        """(encoder, decoder) row lengths."""
        return self.config.seq2seq.input_len, self.config.seq2seq.target_len

    def init_inputs(self):
        encoder_len, decoder_len = self.input_lengths()
        return jnp.zeros((1, encoder_len), jnp.int32), jnp.zeros((1, decoder_len), jnp.int32)

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

    def eval_metrics(self, totals) -> dict[str, float]:
        """Target-token loss (nats), perplexity and accuracy under teacher forcing."""
        return base.token_metrics(totals)


class EncoderDecoderPipeline(base.Pipeline):
    """The end-of-run sample of every encoder-decoder objective: decode a few validation inputs."""

    def sample_pairs(self, data) -> list[tuple[str, str]]:
        """(input text, reference text) pairs the end-of-run sample decodes."""
        raise NotImplementedError

    def decode_config(self):
        """How the end-of-run sample decodes."""
        from lm import decoding  # noqa: PLC0415

        return decoding.DecodeConfig.from_config(self.config.seq2seq)

    def sample(self, model, params, data) -> str:
        from lm import decoding  # noqa: PLC0415

        pairs = self.sample_pairs(data)
        predictions = decoding.decode_texts(model, params, data.tokenizer, [a for a, _ in pairs], self.decode_config())
        return "\n\n".join(f"input:      {a}\nreference:  {b}\nprediction: {p}" for (a, b), p in zip(pairs, predictions))


class Seq2Seq(EncoderDecoderObjective):
    pass


class Seq2SeqPipeline(EncoderDecoderPipeline):
    def prepare(self) -> seq2seq_data.PairCorpus:
        return seq2seq_data.prepare(self.config)

    def train_iterator(self, corpus, process_index: int = 0, process_count: int = 1):
        c, s2s = self.config, self.config.seq2seq
        rows = seq2seq_data.train_rows(corpus.train, s2s.input_len, s2s.target_len, corpus.tokenizer.pad_id, c.data.seed)
        return iter(batching.batched(rows, c.train.batch_size, process_index, process_count, seed=c.data.seed,
                                     prefetch=c.data.prefetch))

    def eval_batches(self, corpus, process_index: int = 0, process_count: int = 1):
        s2s = self.config.seq2seq
        rows = seq2seq_data.eval_rows(corpus.validation, s2s.input_len, s2s.target_len, corpus.tokenizer.pad_id)
        return batching.eval_pass(rows, len(rows), self.eval_batch_size, self.config.eval.max_batches,
                                  process_index, process_count)

    def sample_pairs(self, corpus) -> list[tuple[str, str]]:
        return corpus.validation.texts[:2]
