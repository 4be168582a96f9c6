"""Hugging Face interop for BERT: small random BertForPreTraining / BertForSequenceClassification /
BertForMaskedLM models built with transformers (no hub) convert to our post-norm bert family and
back with equal logits, and an imported BERT fine-tunes here and exports again."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORPUS, REPO

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm import pretrained  # noqa: E402
from lm import workdir as workdir_lib  # noqa: E402
from lm.interop import core, safetensors_io, workdirs  # noqa: E402

pytestmark = pytest.mark.interop
VOCAB, TOLERANCE = 512, 1e-4


# BERT: Hugging Face's post-norm encoder <-> our bert family with norm_position="post".
BERT_SHAPES = {
    "bert_pretraining": lambda vocab: transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=64)),  # exact (erf) GELU, LayerNorm eps 1e-12
    "bert_classification": lambda vocab: transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=vocab, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=40, hidden_act="gelu_new", layer_norm_eps=1e-6)),
    "bert_masked_lm": lambda vocab: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, hidden_act="gelu_pytorch_tanh")),  # the MLM transform's tanh GELU
}


def _random_hf_bert(shape: str, vocab: int = VOCAB, seed: int = 0):
    """Noise on every parameter (as _random_hf_model), and the one-row heads (NSP, classifier)
    scaled up so their logits are large enough for the tolerance to mean something."""
    torch.manual_seed(seed)
    model = BERT_SHAPES[shape](vocab)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.1 * torch.randn_like(param))
            if name.startswith(("classifier.", "cls.seq_relationship.")):
                param.mul_(10.0)
    return model.eval()


def _bert_inputs(vocab: int = VOCAB, seed: int = 1):
    """(tokens, token types, attention mask): segment B from position 10, row 1 padded after 18."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, (2, 24))
    types = np.broadcast_to((np.arange(24) >= 10).astype(np.int64), (2, 24)).copy()
    mask = np.ones((2, 24), np.int64)
    mask[1, 18:] = 0
    tokens[1, 18:], types[1, 18:] = 0, 0
    return tokens, types, mask


def _hf_bert_logits(model, inputs) -> dict:
    tokens, types, mask = (torch.from_numpy(x) for x in inputs)
    with torch.no_grad():
        out = model(input_ids=tokens, token_type_ids=types, attention_mask=mask)
    if hasattr(out, "seq_relationship_logits"):
        return {"mlm": out.prediction_logits.numpy(), "nsp": out.seq_relationship_logits.numpy()}
    if out.logits.ndim == 3:
        return {"mlm": out.logits.numpy()}
    return {"classifier": out.logits.numpy()}


def _our_bert_logits(model, params, inputs) -> dict:
    out = model.apply({"params": params}, *inputs)
    if isinstance(out, tuple):
        return {"mlm": np.asarray(out[0]), "nsp": np.asarray(out[1])}
    return {"classifier": np.asarray(out)}


def _assert_bert_parity(ours: dict, theirs: dict, mask, what: str, min_magnitude: float = 1.0):
    """Equal logits for every head both sides have; MLM at real tokens only (padded queries
    attend nowhere here and everywhere in transformers; nothing reads them)."""
    real = mask.astype(bool)
    compared = sorted(set(ours) & set(theirs))
    assert compared, (sorted(ours), sorted(theirs))
    for head in compared:
        a, b = (ours[head][real], theirs[head][real]) if head == "mlm" else (ours[head], theirs[head])
        assert np.abs(b).max() > min_magnitude, f"{head} logits this small would make the tolerance meaningless"
        assert np.abs(a - b).max() < TOLERANCE, f"{what} {head}: max diff {np.abs(a - b).max()}"


@pytest.mark.parametrize("shape", ["bert_pretraining", "bert_classification"])
def test_bert_logits_match_both_directions_and_safetensors_round_trip(shape, tmp_path):
    hf_model = _random_hf_bert(shape)
    hf_model.save_pretrained(tmp_path / "hf")
    config = workdirs.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"), log=lambda message: None)
    m = config.model
    assert (m.norm_position, m.embedding_norm, m.mlp_activation) == (
        "post", True, "gelu_exact" if shape == "bert_pretraining" else "gelu")
    assert config.train.objective == ("mlm_nsp" if shape == "bert_pretraining" else "classification")
    inputs = _bert_inputs()
    theirs = _hf_bert_logits(hf_model, inputs)
    loaded = pretrained.load(str(tmp_path / "ours"), "latest", require_tokenizer=False)
    model, params = loaded.model, loaded.params
    ours = _our_bert_logits(model, params, inputs)
    _assert_bert_parity(ours, theirs, inputs[2], "HF -> ours")

    workdirs.export_hf(str(tmp_path / "ours"), str(tmp_path / "back"))
    auto = (transformers.AutoModelForPreTraining if shape == "bert_pretraining"
            else transformers.AutoModelForSequenceClassification)
    reloaded, info = auto.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert type(reloaded) is type(hf_model)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _assert_bert_parity(ours, _hf_bert_logits(reloaded.eval(), inputs), inputs[2], "ours -> HF")
    original = safetensors_io.read_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = safetensors_io.read_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(original) == sorted(exported)
    assert all(np.array_equal(original[name], exported[name]) for name in original), "HF -> ours -> HF changed bits"


@pytest.mark.parametrize("num_classes,scan_layers", [(0, True), (2, False)])
def test_our_post_norm_bert_exports_with_equal_logits_and_imports_back_bit_identical(num_classes, scan_layers,
                                                                                      tmp_path):
    """A BERT initialised here (every parameter perturbed, so none is a trivial 0 or 1) loads
    in transformers with the same logits, and converting the export back gives our params bit for bit."""
    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415

    from lm import models  # noqa: PLC0415
    from lm.config import ModelConfig  # noqa: PLC0415
    from lm.interop import bert  # noqa: PLC0415

    m = ModelConfig(family="bert", vocab_size=VOCAB, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, max_len=32,
                    norm_eps=1e-12, mlp_activation="gelu_exact", norm_position="post", embedding_norm=True,
                    num_classes=num_classes, scan_layers=scan_layers)
    inputs = _bert_inputs()
    model = models.build(m)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), *inputs)["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: np.asarray(x + rng.normal(0, 0.3, x.shape), np.float32), params)
    ours = _our_bert_logits(model, params, inputs)

    hf_config, tensors = bert.export(m, core.unstack_layers(params))
    safetensors_io.write_hf_dir(str(tmp_path / "hf"), hf_config, tensors)
    reloaded, info = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True) \
        if not num_classes else transformers.AutoModelForSequenceClassification.from_pretrained(
            tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _assert_bert_parity(ours, _hf_bert_logits(reloaded.eval(), inputs), inputs[2], "ours -> HF")

    back_config = bert.model_config(hf_config)
    assert back_config == ModelConfig(**{**m.__dict__, "scan_layers": False, "dropout_rate": 0.0})
    back = bert.import_params(back_config, tensors, "export", hf_config)
    flat = lambda tree: {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}  # noqa: E731
    expected, got = flat(core.unstack_layers(params)), flat(back)
    assert sorted(expected) == sorted(got)
    assert all(np.array_equal(expected[k], got[k]) for k in expected), "ours -> HF -> ours changed bits"


def test_bert_refusals_name_the_problem(tmp_path):
    from lm import interop  # noqa: PLC0415
    from lm.config import ModelConfig  # noqa: PLC0415
    from lm.interop import bert  # noqa: PLC0415

    with pytest.raises(core.ConversionError, match=r"model.norm_position='pre' \(BERT needs 'post'\)"):
        bert.check_exportable(ModelConfig(family="bert"))  # our default BERT: pre-norm
    post = ModelConfig(family="bert", norm_position="post", embedding_norm=True, mlp_activation="gelu_exact")
    bert.check_exportable(post)
    with pytest.raises(core.ConversionError, match="model.family='bert' \\(GPT-2 needs 'gpt'\\)"):
        interop.get("gpt2").check_exportable(post)  # --architecture=gpt2 on a BERT workdir
    with pytest.raises(core.ConversionError, match="model.pooling='mean'"):
        bert.check_exportable(ModelConfig(**{**post.__dict__, "pooling": "mean"}))
    with pytest.raises(core.ConversionError, match="model.nsp_head='pooled_and_overlap'"):
        bert.check_exportable(ModelConfig(**{**post.__dict__, "nsp_head": "pooled_and_overlap"}))
    bert.check_exportable(ModelConfig(**{**post.__dict__, "nsp_head": "pooled_and_overlap", "num_classes": 2}))
    hf = dict(transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64).to_dict())
    with pytest.raises(core.ConversionError, match="BertForQuestionAnswering"):
        bert.model_config({**hf, "architectures": ["BertForQuestionAnswering"]})
    with pytest.raises(core.ConversionError, match="3 label"):
        bert.model_config({**hf, "architectures": ["BertForSequenceClassification"],
                           "id2label": {str(i): str(i) for i in range(3)}})
    with pytest.raises(core.ConversionError, match="hidden_act='relu'"):
        bert.model_config({**hf, "hidden_act": "relu"})
    with pytest.raises(pretrained.ConfigError, match="model.norm_position='post'.*BERT options"):
        from lm import config as config_lib  # noqa: PLC0415
        config_lib.validate(config_lib.Config(model=ModelConfig(norm_position="post")))


def test_bert_masked_lm_imports_with_fresh_nsp_head_and_a_wordpiece_note(tmp_path):
    """BertForMaskedLM has no NSP head (nor pooler): they start fresh, the import says so, and
    the MLM logits still equal transformers'."""
    hf_model = _random_hf_bert("bert_masked_lm")
    hf_model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    messages = []
    config = workdirs.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"), log=messages.append)
    assert config.train.objective == "mlm_nsp"
    assert any("NSP head" in message and "freshly initialised" in message for message in messages), messages
    assert any("WordPiece comes as vocab.txt only" in message for message in messages), messages
    inputs = _bert_inputs()
    loaded = pretrained.load(str(tmp_path / "ours"), "latest", require_tokenizer=False)
    model, params = loaded.model, loaded.params
    _assert_bert_parity(_our_bert_logits(model, params, inputs), _hf_bert_logits(hf_model, inputs), inputs[2],
                        "HF MaskedLM -> ours")


def _bert_tokenizer(tmp_path):
    """A small sentencepiece model with BERT's special pieces, as our BERT tasks need."""
    from lm.config import TokenizerConfig  # noqa: PLC0415
    from lm.data import tokenizer as tokenizer_lib  # noqa: PLC0415

    tokenizer = tokenizer_lib.train([CORPUS.read_text()[:100_000]],
                                    TokenizerConfig(vocab_size=400, special_symbols="[CLS],[SEP],[MASK]"))
    path = str(tmp_path / "bert_sp.model")
    tokenizer.save(path)
    return path, tokenizer.vocab_size


@pytest.mark.slow  # 25-40 s on 2 cores: the default suite stays under 15 minutes
def test_imported_bert_fine_tunes_on_sst2_with_init_from_and_exports_the_result(tmp_path, capsys):
    """The path from a pretrained BERT in transformers to a classifier and back: import
    BertForPreTraining (with a sentencepiece tokenizer), fine-tune a classifier on it with
    init_from (encoder from the import, fresh head) for a few steps, and export the fine-tuned
    workdir: transformers' BertForSequenceClassification computes its logits."""
    import dataclasses  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from lm import config as config_lib  # noqa: PLC0415
    from lm import trainer  # noqa: PLC0415

    tokenizer_path, vocab = _bert_tokenizer(tmp_path)
    _random_hf_bert("bert_pretraining", vocab=vocab).save_pretrained(tmp_path / "hf")
    imported = str(tmp_path / "imported")
    workdirs.import_hf(str(tmp_path / "hf"), imported, tokenizer_path, log=lambda message: None)
    config = workdir_lib.read_config(imported)
    config = dataclasses.replace(
        config, init_from=imported, model=dataclasses.replace(config.model, num_classes=2),
        data=dataclasses.replace(config.data, seq_len=32),
        train=dataclasses.replace(config.train, objective="classification", steps=4, batch_size=8, log_every_steps=2),
        finetune=dataclasses.replace(config.finetune, task="sst2", data_dir=str(REPO / "data" / "sst2_sample")),
        eval=dataclasses.replace(config.eval, every_steps=4, batch_size=16, max_batches=1),
        checkpoint=dataclasses.replace(config.checkpoint, every_steps=4, async_save=False))
    config_lib.validate(config)
    tuned = str(tmp_path / "tuned")
    final = trainer.train(config, tuned)
    assert "eval/accuracy" in final
    assert "'encoder' parameters from step 0 of" in capsys.readouterr().out

    start = pretrained.load(imported, "latest", require_tokenizer=False).params["encoder"]
    after = pretrained.load(tuned, "latest", require_tokenizer=False).params["encoder"]
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
             zip(jax.tree.leaves(start), jax.tree.leaves(after))]
    assert 0 < max(moved) < 0.05, "four small steps from the imported encoder: moved, but not far"

    architecture, step = workdirs.export_hf(tuned, str(tmp_path / "back"))
    assert (architecture, step) == ("bert", 4)
    assert (tmp_path / "back" / "tokenizer.model").exists()
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    inputs = _bert_inputs(vocab)
    loaded = pretrained.load(tuned, "latest", require_tokenizer=False)
    model, params = loaded.model, loaded.params
    _assert_bert_parity(_our_bert_logits(model, params, inputs), _hf_bert_logits(reloaded, inputs), inputs[2],
                        "fine-tuned ours -> HF", min_magnitude=0.02)  # a fresh head after 4 steps: small logits


def test_bert_files_of_older_transformers_import_the_same(tmp_path):
    """Older BERT files (e.g. on the hub) name LayerNorm parameters gamma/beta, save the tied
    decoder and its bias beside what they are tied to, and the position_ids buffer: the same
    params come out; a decoder that is not tied is refused."""
    import jax  # noqa: PLC0415

    from lm.interop import bert  # noqa: PLC0415

    _random_hf_bert("bert_pretraining").save_pretrained(tmp_path / "hf")
    hf_config, raw = safetensors_io.read_hf_dir(str(tmp_path / "hf"))
    old = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
           for name, value in raw.items()}
    old["cls.predictions.decoder.weight"] = raw["bert.embeddings.word_embeddings.weight"]
    old["cls.predictions.decoder.bias"] = raw["cls.predictions.bias"]
    old["bert.embeddings.position_ids"] = np.arange(64)[None]
    m = bert.model_config(hf_config)
    new_params = jax.tree_util.tree_flatten_with_path(bert.import_params(m, raw, "new", hf_config))[0]
    old_params = jax.tree_util.tree_flatten_with_path(bert.import_params(m, old, "old", hf_config))[0]
    assert [p for p, _ in new_params] == [p for p, _ in old_params]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(new_params, old_params))
    old["cls.predictions.decoder.weight"] = old["cls.predictions.decoder.weight"] + 1.0
    with pytest.raises(core.ConversionError, match="differs from the word embeddings"):
        bert.import_params(m, old, "old", hf_config)


@pytest.mark.slow  # three tool subprocesses: ~2-3 min on the shared 2-core machine
def test_bert_through_the_tools_convert_fine_tune_export(tmp_path):
    """docs/interop.md's commands: tools/convert.py --from_hf, tools/train.py fine-tuning a
    classifier from the imported workdir (configs/workdir.py, init_from), tools/convert.py --to_hf."""
    tokenizer_path, vocab = _bert_tokenizer(tmp_path)
    _random_hf_bert("bert_pretraining", vocab=vocab).save_pretrained(tmp_path / "hf")
    imported, tuned = str(tmp_path / "imported"), str(tmp_path / "tuned")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def tool(*args):
        result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    out = tool("tools/convert.py", f"--from_hf={tmp_path / 'hf'}", f"--workdir={imported}",
               f"--tokenizer={tokenizer_path}")
    assert "gelu_exact" in out
    out = tool("tools/train.py", f"--config=configs/workdir.py:{imported}", f"--workdir={tuned}",
               f"--config.init_from={imported}", "--config.train.objective=classification",
               "--config.model.num_classes=2", "--config.finetune.data_dir=data/sst2_sample",
               "--config.data.seq_len=32", "--config.train.steps=3", "--config.train.batch_size=8",
               "--config.eval.every_steps=3", "--config.eval.max_batches=1", "--config.checkpoint.every_steps=3",
               "--config.checkpoint.async_save=false")
    assert "'encoder' parameters from step 0" in out
    tool("tools/convert.py", f"--to_hf={tmp_path / 'back'}", f"--workdir={tuned}")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    inputs = _bert_inputs(vocab)
    loaded = pretrained.load(tuned, "latest", require_tokenizer=False)
    model, params = loaded.model, loaded.params
    _assert_bert_parity(_our_bert_logits(model, params, inputs), _hf_bert_logits(reloaded, inputs), inputs[2],
                        "tools: fine-tuned ours -> HF", min_magnitude=0.02)
