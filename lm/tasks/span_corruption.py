"""T5's pretraining objectives on windows of a text corpus, siblings of one base
(WindowPretraining: the window source, a corruptor and the row lengths):

  span_corruption  reconstruct the masked spans, each after its sentinel (T5's default)
  denoise          the same corrupted inputs, but write the whole original window
  prefix_lm        continue a window from a random split point

The corpus is the causal-LM corpus (lm/data/pipeline.py: files or a tfds dataset, cleaned,
tokenized once and cached); lm/data/span_corruption.py turns its token stream into packed
encoder-decoder rows. Sentinels (span corruption, denoise) are the tokenizer's `<extra_id_N>`
pieces (declared with tokenizer.special_symbols, as configs/t5_tiny.py does). Validation rows
are corrupted with a fixed seed, so every evaluation scores the same examples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lm.config import ConfigError
from lm.data import batching, pipeline
from lm.data import span_corruption as spans
from lm.tasks.seq2seq import EncoderDecoderObjective, EncoderDecoderPipeline


def sentinel_ids(tokenizer) -> np.ndarray:
    """Ids of <extra_id_0>, <extra_id_1>, ... for as long as the tokenizer has them."""
    ids = []
    while True:
        try:
            ids.append(tokenizer.piece_id(f"<extra_id_{len(ids)}>"))
        except ConfigError:
            return np.asarray(ids, np.int32)


class _Windows:
    """What a window objective's two sides share: `lengths` (the raw window, the encoder and the
    decoder rows), fixed by the subclass from config.seq2seq."""

    def window_lengths(self, s2s) -> spans.SpanLengths:
        raise NotImplementedError

    @property
    def lengths(self) -> spans.SpanLengths:
        return self.window_lengths(self.config.seq2seq)


class WindowObjective(_Windows, EncoderDecoderObjective):
    def input_lengths(self) -> tuple[int, int]:
        return self.lengths.inputs, self.lengths.targets


class WindowPipeline(_Windows, EncoderDecoderPipeline):
    """Windows of `lengths.raw` tokens of the corpus stream, each made into one packed row by the
    subclass's corruptor."""

    def corruptor(self, tokenizer) -> spans.WindowCorruptor:
        raise NotImplementedError

    def prepare(self) -> pipeline.Corpus:
        return pipeline.prepare(self.config.data, self.config.tokenizer)

    def train_iterator(self, corpus, process_index: int = 0, process_count: int = 1):
        c = self.config
        return iter(batching.batched(spans.Windows(corpus.train_tokens, self.lengths.raw), c.train.batch_size,
                                     process_index, process_count, seed=c.data.seed, prefetch=c.data.prefetch,
                                     random_map=self.corruptor(corpus.tokenizer)))

    def eval_batches(self, corpus, process_index: int = 0, process_count: int = 1):
        """Whole batches of validation windows (the last, partial batch is dropped, not padded:
        a window has no padding row), corrupted with a fixed seed."""
        batch = self.eval_batch_size
        windows = spans.Windows(corpus.validation_tokens, self.lengths.raw)
        if len(windows) < batch:
            raise ConfigError(f"the validation split has {len(windows)} windows of {self.lengths.raw} tokens, fewer "
                              f"than eval.batch_size={batch}: lower eval.batch_size or give more validation text")
        corruptor = self.corruptor(corpus.tokenizer)
        return batching.eval_pass(windows, len(windows) // batch * batch, batch, self.config.eval.max_batches,
                                  process_index, process_count, random_map=lambda tokens, rng: corruptor(tokens, rng))

    def sample_pairs(self, corpus) -> list[tuple[str, str]]:
        tok = corpus.tokenizer
        window = spans.Windows(corpus.validation_tokens, self.lengths.raw)[0]
        inputs, targets = self.corruptor(tok).pair(window, np.random.default_rng(0))
        return [(tok.decode(inputs[:-1]), tok.decode(targets[:-1]))]


class _SpanLengths:
    def window_lengths(self, s2s) -> spans.SpanLengths:
        return spans.lengths_for_inputs(s2s.input_len, s2s.noise_density, s2s.mean_noise_span_length)


class SpanCorruption(_SpanLengths, WindowObjective):
    pass


class SpanCorruptionPipeline(_SpanLengths, WindowPipeline):
    def prepare(self) -> pipeline.Corpus:
        corpus = super().prepare()
        sentinels = sentinel_ids(corpus.tokenizer)
        if len(sentinels) < self.lengths.spans:
            raise ConfigError(
                f"{self.config.train.objective} of {self.lengths.raw}-token windows masks {self.lengths.spans} spans, "
                f"but the tokenizer has {len(sentinels)} sentinel pieces <extra_id_N>: add at least "
                f"{self.lengths.spans} to tokenizer.special_symbols (configs/t5_tiny.py adds 100)")
        return corpus

    def corruptor(self, tokenizer) -> spans.Corruptor:
        return spans.Corruptor(self.lengths, sentinel_ids(tokenizer), tokenizer.eos_id, tokenizer.pad_id)


class _DenoiseLengths(_SpanLengths):
    """Span corruption's inputs (same noise_density and mean_noise_span_length); the decoder
    writes the whole original window, so it learns full-length output aligned with the input."""

    def window_lengths(self, s2s) -> spans.SpanLengths:
        lengths = super().window_lengths(s2s)
        return dataclasses.replace(lengths, targets=lengths.raw + 1)


class Denoising(_DenoiseLengths, WindowObjective):
    pass


class DenoisingPipeline(_DenoiseLengths, SpanCorruptionPipeline):
    def corruptor(self, tokenizer) -> spans.Denoiser:
        return spans.Denoiser(self.lengths, sentinel_ids(tokenizer), tokenizer.eos_id, tokenizer.pad_id)

    def decode_config(self):
        # The sample writes the whole window back: decode as long as this objective's targets,
        # not seq2seq.target_len (a fine-tuning setting).
        return dataclasses.replace(super().decode_config(), max_len=self.lengths.targets)


class _PrefixLengths:
    """Encoder reads a random-length prefix of a window of seq2seq.input_len - 1 tokens; the
    decoder writes the rest. Same data, loss and metrics as span corruption."""

    def window_lengths(self, s2s) -> spans.SpanLengths:
        raw = s2s.input_len - 1
        return spans.SpanLengths(raw, 0, 0, raw + 1, raw + 1)


class PrefixLM(_PrefixLengths, WindowObjective):
    pass


class PrefixLMPipeline(_PrefixLengths, WindowPipeline):
    def corruptor(self, tokenizer) -> spans.PrefixSplitter:
        return spans.PrefixSplitter(self.lengths.raw, tokenizer.eos_id, tokenizer.pad_id)
