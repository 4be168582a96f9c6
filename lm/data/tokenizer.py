"""SentencePiece tokenizer: training, loading, and per-token byte lengths (for bits per byte)."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from lm import storage
from lm.config import ConfigError, TokenizerConfig
from lm.data import hf_tokenizer
from lm.data import text as text_lib

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_MAX_TRAINING_CHARS = 20_000_000  # a sample this large gives a stable vocabulary.
# sentencepiece silently skips lines over max_sentence_length (65,536 bytes; UTF-8 takes up to 4 a character).
_MAX_LINE_CHARS = (1 << 16) // 4


class Tokenizer:
    """A loaded sentencepiece model. Newline is its own piece and unknown characters fall back
    to bytes, so every UTF-8 text round-trips exactly."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size()
        self.pad_id, self.eos_id, self.bos_id = self._sp.pad_id(), self._sp.eos_id(), self._sp.bos_id()
        if self.eos_id < 0:
            raise ConfigError("the tokenizer has no end-of-sequence piece (eos_id); train one with tools/train_tokenizer.py")

    @classmethod
    def load(cls, path: str) -> "Tokenizer | hf_tokenizer.HFTokenizer":
        """A sentencepiece .model, or a Hugging Face tokenizer.json (told apart by content, so a
        workdir's `tokenizer.model` may hold either)."""
        if not storage.exists(path):
            raise ConfigError(f"tokenizer file {path!r} does not exist: give a sentencepiece .model "
                              f"(tools/train_tokenizer.py makes one) or a Hugging Face tokenizer.json")
        proto = storage.read_bytes(path)  # a local path or a URL (a workdir on gs://)
        if not proto:
            raise ConfigError(f"tokenizer file {path!r} is empty (a copy or a save cut short?): give the .model file "
                              f"again (a workdir's copy is written from the tokenizer the run was given)")
        if hf_tokenizer.is_hf_tokenizer(proto):
            return hf_tokenizer.HFTokenizer.load_bytes(proto, path)
        try:
            return cls(proto)
        except RuntimeError as error:  # sentencepiece's parse error names no file
            raise ConfigError(f"tokenizer file {path!r} is not a sentencepiece model ({error}): give a .model file "
                              f"made by sentencepiece (tools/train_tokenizer.py makes one)") from None
        except ConfigError as error:
            raise ConfigError(f"tokenizer file {path!r}: {error}") from None

    def save(self, path: str) -> None:
        storage.write_bytes(path, self.model_proto)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=num_threads or os.cpu_count() or 1)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each piece's [start, end) character span in `text`. sentencepiece reports UTF-8
        byte offsets (normalisation is the identity here, so they index the original text); they
        are mapped to characters. Byte-fallback pieces of one character share its span, all but
        the last of them empty."""
        proto = self._sp.encode(text, return_type="proto")
        char_at_byte = np.zeros(len(text.encode()) + 1, np.int64)
        position = 0
        for index, char in enumerate(text):
            width = len(char.encode())
            char_at_byte[position:position + width] = index
            position += width
        char_at_byte[position] = len(text)
        return ([p.id for p in proto.pieces],
                [(int(char_at_byte[p.begin]), int(char_at_byte[p.end])) for p in proto.pieces])

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def piece_id(self, piece: str) -> int:
        index = self._sp.piece_to_id(piece)
        if index == self._sp.unk_id() and piece != self._sp.id_to_piece(index):
            raise ConfigError(f"the tokenizer has no piece {piece!r}: retrain it with tokenizer.special_symbols")
        return index

    @functools.cached_property
    def byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each id stands for in decoded text (control pieces: 0), so that the
        bytes of a token sequence are the sum over its ids."""
        lengths = np.zeros(self.vocab_size, np.int32)
        for i in range(self.vocab_size):
            if self._sp.is_control(i) or self._sp.is_unknown(i):
                continue
            lengths[i] = 1 if self._sp.is_byte(i) else len(self._sp.id_to_piece(i).replace("\u2581", " ").encode())
        return lengths


def train(texts: Iterable[str], config: TokenizerConfig) -> Tokenizer:
    """Trains a sentencepiece model on (a prefix of) `texts`, one line a sentence."""

    cut = 0

    def lines():
        nonlocal cut
        budget = _MAX_TRAINING_CHARS
        for text in texts:
            for line in text.split("\n"):
                if not line.strip():
                    continue
                pieces = text_lib.split_long_line(line, _MAX_LINE_CHARS)
                cut += len(pieces) > 1
                for piece in pieces:
                    yield piece
                    budget -= len(piece)
                    if budget <= 0:
                        return

    symbols = ["\n"] + [s.strip() for s in config.special_symbols.split(",") if s.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines(), model_writer=model, vocab_size=config.vocab_size,
        model_type=config.model_type, byte_fallback=True, character_coverage=0.9995,
        normalization_rule_name="identity",  # lm/data/text.py has normalised already.
        add_dummy_prefix=False, remove_extra_whitespaces=False, user_defined_symbols=symbols,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, max_sentence_length=1 << 16,
        num_threads=os.cpu_count() or 1, minloglevel=2)
    if cut:
        text_lib.warn(f"{cut} line(s) longer than {_MAX_LINE_CHARS:,} characters were cut at spaces into pieces to "
                      f"train the tokenizer (sentencepiece skips longer lines); the text itself is tokenized whole")
    return Tokenizer(model.getvalue())


def training_error(message: str, vocab_size: int) -> str:
    """sentencepiece's training failure as what to change: its messages name its own flags."""
    if match := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
        return (f"tokenizer.vocab_size={vocab_size} is too small for this corpus: its distinct characters, 256 byte "
                f"pieces and the control pieces need at least {match[1]}; raise tokenizer.vocab_size")
    if match := re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message):
        return (f"tokenizer.vocab_size={vocab_size} is too large for this corpus (sentencepiece finds at most "
                f"{match[2]} pieces in it): lower tokenizer.vocab_size to {match[2]} or less, or give more text")
    return f"training the tokenizer failed: {message.splitlines()[-1] if message else message}"


def text_identity(kind: str, texts: Iterable[str]) -> str:
    """A cache identity for a tokenizer trained on in-memory `texts`: their content, so any
    change of files, fields, casing or prefix gives another tokenizer."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace") + b"\0")
    return f"{kind}:{digest.hexdigest()}"


def load_or_train(config: TokenizerConfig, texts: Iterable[str], corpus_identity: str, cache_dir: str) -> Tokenizer:
    """`config.path` if given; else a tokenizer trained on the corpus, cached by corpus and settings."""
    if config.path:
        return Tokenizer.load(config.path)
    key = hashlib.sha256(f"{corpus_identity}|{config.vocab_size}|{config.model_type}|{config.special_symbols}"
                         .encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, "tokenizers", f"{key}.model")
    if os.path.exists(path):
        return Tokenizer.load(path)
    try:
        tokenizer = train(texts, config)
    except RuntimeError as error:
        raise ConfigError(training_error(str(error), config.vocab_size)) from None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tokenizer.save(path)
    return tokenizer
