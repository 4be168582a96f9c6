"""T5's span-corruption pretraining: reconstruct masked spans of a text corpus (and the
prefix-LM alternative: continue a text from a random split point).

The corpus is the causal-LM corpus (lm/data/pipeline.py: files or a tfds dataset, cleaned,
tokenized once and cached); lm/data/span_corruption.py turns its token stream into packed
encoder-decoder rows. Sentinels are the tokenizer's `<extra_id_N>` pieces (declared with
tokenizer.special_symbols, as configs/t5_tiny.py does). Validation rows are corrupted with a
fixed seed, so every evaluation scores the same examples.
"""

from __future__ import annotations

import numpy as np

from lm.config import Config, ConfigError
from lm.data import batching, pipeline
from lm.data import span_corruption as spans
from lm.tasks.seq2seq import EncoderDecoderTask

def sentinel_ids(tokenizer) -> np.ndarray:
    """Ids of <extra_id_0>, <extra_id_1>, ... for as long as the tokenizer has them."""
    ids = []
    while True:
        try:
            ids.append(tokenizer.piece_id(f"<extra_id_{len(ids)}>"))
        except ConfigError:
            return np.asarray(ids, np.int32)


class SpanCorruption(EncoderDecoderTask):
    def __init__(self, config: Config):
        super().__init__(config)
        s2s = config.seq2seq
        self.lengths = spans.lengths_for_inputs(s2s.input_len, s2s.noise_density, s2s.mean_noise_span_length)

    def init_inputs(self):
        import jax.numpy as jnp  # noqa: PLC0415

        return (jnp.zeros((1, self.lengths.inputs), jnp.int32), jnp.zeros((1, self.lengths.targets), jnp.int32))

    def prepare(self) -> pipeline.Corpus:
        corpus = pipeline.prepare(self.config.data, self.config.tokenizer)
        sentinels = sentinel_ids(corpus.tokenizer)
        if len(sentinels) < self.lengths.spans:
            raise ConfigError(
                f"span corruption of {self.lengths.raw}-token windows masks {self.lengths.spans} spans, but the "
                f"tokenizer has {len(sentinels)} sentinel pieces <extra_id_N>: add at least {self.lengths.spans} to "
                f"tokenizer.special_symbols (configs/t5_tiny.py adds 100)")
        return corpus

    def _corruptor(self, corpus) -> spans.Corruptor:
        tok = corpus.tokenizer
        return spans.Corruptor(self.lengths, sentinel_ids(tok), tok.eos_id, tok.pad_id)

    def train_iterator(self, corpus, process_index: int = 0, process_count: int = 1):
        c = self.config
        return iter(batching.batched(spans.Windows(corpus.train_tokens, self.lengths.raw), c.train.batch_size,
                                         process_index, process_count, seed=c.data.seed, prefetch=c.data.prefetch,
                                         random_map=self._corruptor(corpus)))

    def eval_batches(self, corpus, process_index: int = 0, process_count: int = 1):
        c = self.config
        batch = c.eval.batch_size or c.train.batch_size
        windows = spans.Windows(corpus.validation_tokens, self.lengths.raw)
        num_batches = len(windows) // batch
        if c.eval.max_batches:
            num_batches = min(num_batches, c.eval.max_batches)
        if num_batches == 0:
            raise ConfigError(f"the validation split has {len(windows)} windows of {self.lengths.raw} tokens, fewer "
                              f"than eval.batch_size={batch}: lower eval.batch_size or give more validation text")
        windows.length = num_batches * batch
        corruptor = self._corruptor(corpus)
        return batching.batched(windows, batch, process_index, process_count, seed=None,
                                    random_map=lambda tokens, rng: corruptor(tokens, rng))

    def sample_pairs(self, corpus) -> list[tuple[str, str]]:
        tok, corruptor = corpus.tokenizer, self._corruptor(corpus)
        if isinstance(corruptor, spans.PrefixSplitter):
            inputs, targets = corruptor.split(spans.Windows(corpus.validation_tokens, corruptor.raw)[0],
                                              np.random.default_rng(0))
            return [(tok.decode(inputs[:-1]), tok.decode(targets[:-1]))]
        window = spans.Windows(corpus.validation_tokens, self.lengths.raw)[0]
        inputs, targets = spans.corrupt(window, spans.noise_mask(self.lengths, np.random.default_rng(0)),
                                        corruptor.sentinel_ids, tok.eos_id)
        return [(tok.decode(inputs[:-1]), tok.decode(targets[:-1]))]


class PrefixLM(SpanCorruption):
    """Encoder reads a random-length prefix of a window of seq2seq.input_len - 1 tokens; the
    decoder writes the rest. Same data, loss and metrics as span corruption."""

    def __init__(self, config: Config):
        super().__init__(config)
        raw = config.seq2seq.input_len - 1
        self.lengths = spans.SpanLengths(raw, 0, 0, raw + 1, raw + 1)

    def prepare(self) -> pipeline.Corpus:
        return pipeline.prepare(self.config.data, self.config.tokenizer)

    def _corruptor(self, corpus) -> spans.PrefixSplitter:
        return spans.PrefixSplitter(self.lengths.raw, corpus.tokenizer.eos_id, corpus.tokenizer.pad_id)
