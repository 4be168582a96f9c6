"""Causal language modelling: next-token prediction on packed windows of a token stream."""

from __future__ import annotations

import math

import jax.numpy as jnp

from lm import fused_loss, losses
from lm.data import packing, pipeline, streaming
from lm.tasks import base


class CausalLM(base.Objective):
    def init_inputs(self):
        return (jnp.zeros((1, self.config.data.seq_len), jnp.int32),)

    @staticmethod
    def _apply(model, params, batch, rng, deterministic: bool, **kwargs):
        return model.apply({"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"],
                           deterministic=deterministic, rngs=None if deterministic else {"dropout": rng}, **kwargs)

    def predictions(self, model, params, batch, rng, deterministic: bool):
        """(logits [B, L, V], target ids [B, L], weights [B, L]): every token predicts the next."""
        return self._apply(model, params, batch, rng, deterministic), batch["targets"], batch["weights"]

    def loss_sums(self, model, params, batch, rng, deterministic: bool) -> dict:
        # z-loss is a training term whether or not dropout runs; eval_sums drops it.
        train = self.config.train
        if not train.loss_chunk:
            return losses.cross_entropy(*self.predictions(model, params, batch, rng, deterministic), train.z_loss)
        hidden_BLD, head_VD = self._apply(model, params, batch, rng, deterministic, return_hidden=True)
        return fused_loss.fused_cross_entropy(hidden_BLD, head_VD, batch["targets"], batch["weights"],
                                              chunk=train.loss_chunk, dtype=model.config.dtype,
                                              softcap=model.config.logit_softcap, z_loss=train.z_loss)

    def total_weight(self, batch):
        return jnp.sum(batch["weights"])

    def train_metrics(self, sums, total_weight) -> dict:
        return {"accuracy": sums["correct"] / total_weight}

    def eval_sums(self, model, params, batch) -> dict:
        """NLL (nats), correct predictions, target tokens and target bytes, summed."""
        sums = super().eval_sums(model, params, batch)
        sums["bytes"] = jnp.sum(batch["target_bytes"]).astype(jnp.float32)
        return sums

    def eval_metrics(self, totals) -> dict[str, float]:
        """Loss (nats/token), perplexity, bits per byte and accuracy."""
        metrics = base.token_metrics(totals)
        return {"eval/loss": metrics["eval/loss"], "eval/perplexity": metrics["eval/perplexity"],
                "eval/bits_per_byte": totals["loss_sum"] / math.log(2) / max(totals["bytes"], 1.0),
                "eval/accuracy": metrics["eval/accuracy"]}


class CausalLMPipeline(base.Pipeline):
    def prepare(self) -> pipeline.Corpus | streaming.StreamingCorpus:
        c = self.config
        if streaming.enabled(c.data):
            budget = streaming.validation_budget(c.data.seq_len, self.eval_batch_size, c.eval.max_batches)
            return streaming.prepare(c.data, c.tokenizer, budget)
        return pipeline.prepare(c.data, c.tokenizer)

    def train_iterator(self, corpus, process_index: int = 0, process_count: int = 1):
        c = self.config
        if isinstance(corpus, streaming.StreamingCorpus):
            tok = corpus.tokenizer
            rows = packing.CausalRows(c.data.seq_len, tok.eos_id, tok.byte_lengths).spec()
            return streaming.train_iterator(corpus, rows, c.train.batch_size, c.data.seed, process_index,
                                            process_count, c.data.num_workers)
        return pipeline.train_iterator(corpus, c.data.seq_len, c.train.batch_size, c.data.seed, process_index,
                                       process_count, c.data.prefetch)

    def eval_batches(self, corpus, process_index: int = 0, process_count: int = 1):
        c = self.config
        return pipeline.eval_batches(corpus, c.data.seq_len, self.eval_batch_size, c.eval.max_batches,
                                     process_index, process_count)

    def sample(self, model, params, corpus) -> str:
        from lm import generate, sampling  # noqa: PLC0415

        cfg, tokenizer, model_config = self.config.train, corpus.tokenizer, model.config
        # Cached decoding (lm/generate.py); a learned position table caps prompt + sample at model.max_len.
        room = cfg.sample_tokens
        if model_config.positions == "learned":
            room = min(room, model_config.max_len - 1 - len(tokenizer.encode(cfg.sample_prompt)))
        if room < 1:
            return cfg.sample_prompt + " [no sample: the prompt fills model.max_len]"
        gen = generate.GenerationConfig(max_new_tokens=room, sampler=sampling.Sampler(cfg.sample_temperature),
                                        seed=cfg.seed)
        return cfg.sample_prompt + generate.generate_text(model, params, tokenizer, [cfg.sample_prompt], gen)[0]
