"""Hugging Face tokenizer.json as a workdir tokenizer: GPT-2 byte-level BPE, Llama-style BPE with
byte fallback, BERT WordPiece, all trained here with the `tokenizers` library (no hub); and a
converted GPT-2 generating from text the ids transformers generates."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORPUS, REPO

tokenizers = pytest.importorskip("tokenizers")

from lm.config import TokenizerConfig  # noqa: E402
from lm.data import tokenizer as tokenizer_lib  # noqa: E402
from lm.data.hf_tokenizer import HFTokenizer  # noqa: E402

pytestmark = pytest.mark.interop
TEXTS = ["Héllo wörld: naïve café, 日本語 and emoji 🙂 ok.", "  two  spaces\nand a newline\ttab", "ROMEO: my lord"]


def _corpus_lines(limit=4000):
    return CORPUS.read_text().splitlines()[:limit] + TEXTS


def _byte_level_bpe(vocab_size=400, special_tokens=("<|endoftext|>",)):
    from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus_lines(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _llama_style_bpe():
    """Llama 2's tokenizer.json: BPE over Metaspace ("▁") pieces with byte fallback."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers  # noqa: PLC0415
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(_corpus_lines(), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *byte_pieces]))
    return tok


def _wordpiece():
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers  # noqa: PLC0415
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_corpus_lines(), trainers.WordPieceTrainer(
        vocab_size=500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return tok


def _save(tok, directory, **specials):
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({f"{role}_token": name for role, name in specials.items()}, f)
    return os.path.join(directory, "tokenizer.json")


def test_byte_level_bpe_round_trips_and_counts_bytes_exactly(tmp_path):
    path = _save(_byte_level_bpe(), tmp_path, eos="<|endoftext|>", bos="<|endoftext|>")
    tok = tokenizer_lib.Tokenizer.load(path)
    assert isinstance(tok, HFTokenizer)
    assert tok.eos_id == tok.bos_id == tok.pad_id == tok.piece_id("<|endoftext|>")
    for text in TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(tok.byte_lengths[ids].sum()) == len(text.encode())
        ids_again, offsets = tok.encode_with_offsets(text)
        assert ids_again == ids and offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    # The saved file is self-contained (special tokens inside) and loads back the same.
    tok.save(str(tmp_path / "workdir_tokenizer.model"))
    os.remove(tmp_path / "tokenizer_config.json")
    again = tokenizer_lib.Tokenizer.load(str(tmp_path / "workdir_tokenizer.model"))
    assert again.model_proto == tok.model_proto and again.fingerprint == tok.fingerprint
    assert again.encode(TEXTS[0]) == tok.encode(TEXTS[0]) and again.eos_id == tok.eos_id


@pytest.mark.parametrize("kind", ["byte_level", "llama_style", "wordpiece"])
def test_ids_match_transformers_tokenizer(kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    build, specials = {
        "byte_level": (_byte_level_bpe, dict(eos="<|endoftext|>", bos="<|endoftext|>")),
        "llama_style": (_llama_style_bpe, dict(eos="</s>", bos="<s>", unk="<unk>")),
        "wordpiece": (_wordpiece, dict(eos="[SEP]", bos="[CLS]", pad="[PAD]", unk="[UNK]")),
    }[kind]
    path = _save(build(), tmp_path, **specials)
    ours = tokenizer_lib.Tokenizer.load(path)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=path)
    assert ours.eos_id == theirs.convert_tokens_to_ids(specials["eos"])
    assert ours.bos_id == theirs.convert_tokens_to_ids(specials["bos"])
    if "pad" in specials:
        assert ours.pad_id == theirs.convert_tokens_to_ids(specials["pad"])
    assert ours.vocab_size == len(theirs)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False)
        assert ours.decode(ids) == theirs.decode(ids)
        _, offsets = ours.encode_with_offsets(text)
        assert len(offsets) == len(ids) and all(0 <= s <= e <= len(text) for s, e in offsets)
    if kind == "llama_style":  # byte fallback: every text round-trips, and bytes are counted exactly
        ids = ours.encode(TEXTS[0])
        assert ours.decode(ids) == TEXTS[0] and int(ours.byte_lengths[ids].sum()) == len(TEXTS[0].encode())


def test_tokenizer_without_an_eos_is_refused(tmp_path):
    from lm.config import ConfigError  # noqa: PLC0415
    _byte_level_bpe(special_tokens=()).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ConfigError, match="end-of-sequence"):
        tokenizer_lib.Tokenizer.load(str(tmp_path / "tokenizer.json"))


def test_sentencepiece_offsets_are_character_spans():
    text = "héllo 日本 wörld, the thing"
    tok = tokenizer_lib.train(["héllo wörld, this is a test of the thing\nanother line 日"] * 200,
                              TokenizerConfig(vocab_size=300))
    ids, offsets = tok.encode_with_offsets(text)
    assert ids == tok.encode(text)
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    # Every piece's span reproduces its text (byte-fallback pieces: the last of a character's
    # pieces holds the character, the others are empty).
    for i, (start, end) in enumerate(offsets):
        piece = tok.decode([ids[i]])
        if start < end:
            assert text[start:end] in (piece, tok.decode(ids[i - 2:i + 1]))
    assert "".join(text[s:e] for s, e in offsets) == text


def test_converted_gpt2_with_a_byte_level_bpe_generates_the_ids_transformers_generates(tmp_path):
    """The acceptance check of item 5: a random GPT-2 plus a byte-level BPE trained here, saved the
    way transformers saves them, converted with tools/convert.py, generates greedily from a text
    prompt exactly the token ids (and so the text) transformers generates."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lm import generate, pretrained, sampling  # noqa: PLC0415

    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(), eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    eos = hf_tokenizer.eos_token_id
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(hf_tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=eos,
        eos_token_id=eos))
    with torch.no_grad():
        for param in hf_model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    hf_model.eval().save_pretrained(tmp_path / "hf")
    hf_tokenizer.save_pretrained(tmp_path / "hf")
    subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), f"--from_hf={tmp_path / 'hf'}",
                    f"--workdir={tmp_path / 'ours'}"], check=True, cwd=REPO, capture_output=True)

    loaded = pretrained.load(str(tmp_path / "ours"))
    prompt = "ROMEO: my lord, héllo"
    ids = loaded.tokenizer.encode(prompt)
    assert ids == hf_tokenizer.encode(prompt, add_special_tokens=False)
    prompt_ids = [loaded.tokenizer.eos_id] + ids  # how generate_text starts a document
    gen = generate.GenerationConfig(max_new_tokens=16, sampler=sampling.Sampler(temperature=0.0))
    ours = generate.generate(loaded.model, loaded.params, [prompt_ids], gen).tokens[0]
    with torch.no_grad():  # an explicit mask: transformers would otherwise mask the leading EOS as padding
        theirs = hf_model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids)),
                                   max_new_tokens=16, do_sample=False, eos_token_id=None,
                                   pad_token_id=eos)[0, len(prompt_ids):].tolist()
    assert ours == theirs
    text = generate.generate_text(loaded.model, loaded.params, loaded.tokenizer, [prompt],
                                  generate.GenerationConfig(max_new_tokens=16, sampler=sampling.Sampler(temperature=0.0)))
    stop = theirs.index(eos) if eos in theirs else len(theirs)
    assert text[0] == hf_tokenizer.decode(theirs[:stop])
    # ... and exports back with a tokenizer transformers' AutoTokenizer reads.
    from lm.interop import workdirs  # noqa: PLC0415
    workdirs.export_hf(str(tmp_path / "ours"), str(tmp_path / "back"))
    back = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    assert back.encode(prompt, add_special_tokens=False) == ids and back.eos_token_id == eos
    assert np.isfinite(loaded.tokenizer.byte_lengths).all()
