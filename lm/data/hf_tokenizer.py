"""Hugging Face tokenizers (`tokenizer.json`) behind the same interface as our sentencepiece `Tokenizer`.

GPT-2's byte-level BPE, Llama's BPE / SentencePiece-converted models and BERT's WordPiece all
ship as one `tokenizer.json` the `tokenizers` library runs. That file does not say which token
ends a sequence or pads: those come from the checkpoint's `tokenizer_config.json`. So the file we
keep (in a workdir, as `tokenizer.model`) wraps both, and is self-contained:

  {"format": "lm.hf_tokenizer", "special_tokens": {"eos": "...", "bos": "...", "pad": "..."},
   "tokenizer": <the tokenizer.json object>}

`load_bytes` also accepts a bare tokenizer.json; its special tokens are then found by their usual
names. Text is encoded without the tokenizer's post-processor (no [CLS]/[SEP], no BOS added):
like the sentencepiece path, our pipelines add the special ids they need themselves.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Iterable, Sequence

import numpy as np

from lm import storage
from lm.config import ConfigError

FORMAT = "lm.hf_tokenizer"
# Common names, most specific first; used only when tokenizer_config.json does not say.
_GUESSES = {
    "eos": ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]"),
    "bos": ("<|begin_of_text|>", "<s>", "<bos>", "[CLS]", "<|endoftext|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
}


def _import_tokenizers():
    try:
        import tokenizers  # noqa: PLC0415 (an optional dependency: pip install -e '.[hf]')
    except ImportError:
        raise ConfigError("this is a Hugging Face tokenizer.json: install the `tokenizers` package "
                          "(pip install -e '.[hf]')") from None
    return tokenizers


def _token_name(value) -> str | None:
    """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    """A `tokenizers.Tokenizer` with our Tokenizer's interface (ids, specials, save/load, byte lengths)."""

    def __init__(self, tokenizer_json: str, special_tokens: dict[str, str | None]):
        tokenizers = _import_tokenizers()
        try:
            self._tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as error:  # the Rust parser raises a bare Exception
            raise ConfigError(f"not a Hugging Face tokenizer.json ({error})") from None
        self._json = json.loads(tokenizer_json)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.special_tokens = dict(special_tokens)
        ids = {}
        for role, name in self.special_tokens.items():
            ids[role] = self._tok.token_to_id(name) if name else None
            if name and ids[role] is None:
                raise ConfigError(f"the tokenizer has no {role} token {name!r}")
        if ids.get("eos") is None:
            raise ConfigError("the Hugging Face tokenizer names no end-of-sequence token: set eos_token in the "
                              "checkpoint's tokenizer_config.json")
        self.eos_id = ids["eos"]
        self.bos_id = ids["bos"] if ids.get("bos") is not None else self.eos_id
        # GPT-2 has no padding token; padded positions always carry weight 0 and are masked, so
        # what fills them only has to be a valid id. EOS is what transformers uses there too.
        self.pad_id = ids["pad"] if ids.get("pad") is not None else self.eos_id
        self.model_proto = json.dumps({"format": FORMAT, "special_tokens": self.special_tokens,
                                       "tokenizer": self._json}, sort_keys=True).encode()

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def load_bytes(cls, data: bytes, source: str) -> "HFTokenizer":
        try:
            value = json.loads(data)
        except ValueError as error:
            raise ConfigError(f"{source!r} is not JSON ({error})") from None
        if value.get("format") == FORMAT:
            return cls(json.dumps(value["tokenizer"]), value["special_tokens"])
        return cls(data.decode(), _specials_for(value, os.path.dirname(source)))

    @classmethod
    def from_hf_dir(cls, hf_dir: str) -> "HFTokenizer":
        """The tokenizer of a Hugging Face checkpoint directory (tokenizer.json + tokenizer_config.json)."""
        path = os.path.join(hf_dir, "tokenizer.json")
        with open(path, "rb") as f:
            return cls.load_bytes(f.read(), path)

    def save(self, path: str) -> None:
        storage.write_bytes(path, self.model_proto)

    def save_tokenizer_json(self, path: str) -> None:
        """The bare tokenizer.json, as a Hugging Face directory holds it."""
        self._tok.save(path)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()[:16]

    # --- text <-> ids -------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        del num_threads  # the Rust library parallelises itself
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each token's [start, end) character span in `text`."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, [tuple(o) for o in encoding.offsets]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def piece_id(self, piece: str) -> int:
        index = self._tok.token_to_id(piece)
        if index is None:
            raise ConfigError(f"the tokenizer has no token {piece!r}")
        return index

    @functools.cached_property
    def byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each id stands for in decoded text (special tokens: 0). Exact for byte-level
        BPE (GPT-2, Llama 3); for WordPiece and Metaspace models the word-start space is counted."""
        lengths = np.zeros(self.vocab_size, np.int32)
        special = {t["id"] for t in self._json.get("added_tokens", []) if t.get("special")}
        decoder = _decoder_types(self._json.get("decoder"))
        byte_level = "ByteLevel" in decoder
        to_byte = {c: b for b, c in _bytes_to_unicode().items()}
        for i in range(self.vocab_size):
            token = self._tok.id_to_token(i)
            if token is None or i in special:
                continue
            if byte_level:
                lengths[i] = sum(1 for c in token if c in to_byte) or len(token.encode())
            elif token.startswith("<0x") and token.endswith(">") and len(token) == 6:
                lengths[i] = 1  # a byte-fallback piece
            elif "WordPiece" in decoder:
                lengths[i] = len(token[2:].encode()) if token.startswith("##") else len(token.encode()) + 1
            else:
                lengths[i] = len(token.replace("\u2581", " ").encode())
        return lengths


def _decoder_types(decoder) -> set[str]:
    if not decoder:
        return set()
    types = {decoder.get("type", "")}
    for inner in decoder.get("decoders", []) or []:
        types |= _decoder_types(inner)
    return types


def _specials_for(tokenizer_json: dict, directory: str) -> dict[str, str | None]:
    """Special tokens from a sibling tokenizer_config.json, else by their usual names."""
    config_path = storage.join(directory, "tokenizer_config.json") if directory else ""
    named = {}
    if directory and storage.exists(config_path):
        config = json.loads(storage.read_text(config_path))
        named = {role: _token_name(config.get(f"{role}_token")) for role in _GUESSES}
    vocabulary = {t["content"] for t in tokenizer_json.get("added_tokens", [])}
    model_vocab = tokenizer_json.get("model", {}).get("vocab")
    if isinstance(model_vocab, dict):
        vocabulary |= set(model_vocab)
    for role, guesses in _GUESSES.items():
        if not named.get(role):
            named[role] = next((g for g in guesses if g in vocabulary), None)
    return named


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel pre-tokenizers emit)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def is_hf_tokenizer(data: bytes) -> bool:
    """A sentencepiece model is a binary protobuf; a tokenizer.json (or our wrapper) is a JSON object."""
    return data.lstrip()[:1] == b"{"
