"""Hugging Face interop: small random GPT-2 and Llama models built with transformers (no hub)
convert to our workdirs and back with equal logits, and imported workdirs train and generate."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORPUS, REPO

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm import pretrained  # noqa: E402
from lm.interop import core, safetensors_io, workdirs  # noqa: E402

pytestmark = pytest.mark.interop
VOCAB, TOLERANCE = 512, 1e-4

SHAPES = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=None, eos_token_id=None)),
    "llama_gqa_untied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=5000.0, rms_norm_eps=1e-5,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)),
    "llama_tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
        pad_token_id=None)),
    # T5 v1.0 (ReLU): with the d_model**-0.5 output scaling, and without (transformers 5 writes
    # scale_decoder_outputs=false when tie_word_embeddings=False is asked for).
    "t5_scaled": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=24, feed_forward_proj="relu",
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
    "t5_unscaled": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=48, d_kv=8, d_ff=64, num_layers=2, num_heads=3, feed_forward_proj="relu",
        tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
}


def _random_hf_model(shape: str, seed: int = 0):
    """transformers' init leaves norms at 1 and biases at 0, which would hide a swapped scale or
    bias; every parameter gets noise so each one matters to the logits."""
    torch.manual_seed(seed)
    model = SHAPES[shape]()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _inputs(shape, seed=1):
    """Token ids: one array for decoders, (encoder inputs, decoder inputs) for T5."""
    rng = np.random.default_rng(seed)
    if shape.startswith("t5"):
        return rng.integers(2, VOCAB, (2, 40)), rng.integers(2, VOCAB, (2, 12))
    return rng.integers(0, VOCAB, (2, 48))


def _hf_logits(model, tokens):
    with torch.no_grad():
        if isinstance(tokens, tuple):
            encoder_ids, decoder_ids = (torch.from_numpy(t) for t in tokens)
            return model(input_ids=encoder_ids, decoder_input_ids=decoder_ids).logits.numpy()
        return model(torch.from_numpy(tokens)).logits.numpy()


def _our_logits(workdir, tokens, step=0):
    config = pretrained.read_config(workdir, require_tokenizer=False)
    _, model, params, _ = pretrained.restore_params(workdir, config, step)
    return np.asarray(model.apply({"params": params}, *(tokens if isinstance(tokens, tuple) else (tokens,))))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_logits_match_both_directions_and_safetensors_round_trip(shape, tmp_path):
    hf_model = _random_hf_model(shape)
    hf_model.save_pretrained(tmp_path / "hf")
    workdirs.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"))
    tokens = _inputs(shape)

    ours = _our_logits(str(tmp_path / "ours"), tokens)
    theirs = _hf_logits(hf_model, tokens)
    assert np.abs(theirs).max() > 1.0, "logits this small would make the tolerance meaningless"
    assert np.abs(ours - theirs).max() < TOLERANCE, f"HF -> ours: max diff {np.abs(ours - theirs).max()}"

    workdirs.export_hf(str(tmp_path / "ours"), str(tmp_path / "back"))
    auto = transformers.AutoModelForSeq2SeqLM if shape.startswith("t5") else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(tmp_path / "back").eval()
    assert type(reloaded) is type(hf_model)
    back = _hf_logits(reloaded, tokens)
    assert np.abs(back - ours).max() < TOLERANCE, f"ours -> HF: max diff {np.abs(back - ours).max()}"

    original = safetensors_io.read_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = safetensors_io.read_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(original) == sorted(exported)
    if not shape.startswith("t5"):
        assert all(np.array_equal(original[name], exported[name]) for name in original), "HF -> ours -> HF changed bits"
        return
    # T5's factors (sqrt(head_dim) on queries, the output scaling) are folded into our weights and
    # back: equal up to rounding, and the output scaling moves into the final norm.
    final_norm = "decoder.final_layer_norm.weight"
    factor = 64 ** -0.5 if shape == "t5_scaled" else 1.0
    np.testing.assert_allclose(exported[final_norm], original[final_norm] * factor, rtol=1e-6)
    for name in set(original) - {final_norm}:
        np.testing.assert_allclose(exported[name], original[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_our_trained_model_loads_in_transformers(trained_tiny_workdir, tmp_path):
    """A model trained here (not one converted in) exports as GPT-2 with the same logits."""
    architecture, step = workdirs.export_hf(trained_tiny_workdir, str(tmp_path / "hf"))
    assert (architecture, step) == ("gpt2", 40)
    tokens = np.random.default_rng(2).integers(0, VOCAB, (2, 32))
    theirs = _hf_logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval(), tokens)
    ours = _our_logits(trained_tiny_workdir, tokens)
    assert np.abs(theirs - ours).max() < TOLERANCE
    with pytest.raises(core.ConversionError, match="cannot be exported as Llama"):
        workdirs.export_hf(trained_tiny_workdir, str(tmp_path / "llama"), architecture="llama")


def test_refusals_name_the_problem(tmp_path):
    hf_model = _random_hf_model("gpt2")
    hf_model.save_pretrained(tmp_path / "hf")
    os.remove(tmp_path / "hf" / "model.safetensors")
    torch.save(hf_model.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(core.ConversionError, match="pickled PyTorch weights"):
        workdirs.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"))
    with pytest.raises(core.ConversionError, match="no config.json"):
        workdirs.import_hf(str(tmp_path), str(tmp_path / "ours"))
    os.makedirs(tmp_path / "no_tokenizer")
    with open(tmp_path / "no_tokenizer" / "config.json", "w") as f:
        f.write("{}")
    with pytest.raises(pretrained.ConfigError, match="--tokenizer=PATH.model"):
        pretrained.read_config(str(tmp_path / "no_tokenizer"))


@pytest.mark.slow  # three tool subprocesses: ~100 s on the shared 2-core machine
def test_imported_workdir_fine_tunes_and_generates_through_the_tools(trained_tiny_workdir, tmp_path):
    """The acceptance path: tools/convert.py --from_hf (with a sentencepiece tokenizer), then
    tools/train.py resumes it with configs/workdir.py (other data and batch than the converted
    config's defaults, hence --allow_config_change), then tools/generate.py decodes from it."""
    hf_model = _random_hf_model("gpt2")
    hf_model.save_pretrained(tmp_path / "hf")
    workdir, tokenizer = str(tmp_path / "ours"), os.path.join(trained_tiny_workdir, "tokenizer.model")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def tool(*args):
        result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    tool("tools/convert.py", f"--from_hf={tmp_path / 'hf'}", f"--workdir={workdir}", f"--tokenizer={tokenizer}")
    tool("tools/train.py", f"--config=configs/workdir.py:{workdir}", f"--workdir={workdir}",
         f"--config.data.train_files={CORPUS}", "--config.train.steps=3", "--config.train.batch_size=4",
         "--config.data.seq_len=32", "--config.eval.max_batches=1", "--config.train.sample_tokens=4",
         "--config.checkpoint.async_save=false", "--allow_config_change")
    assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))
    tokens = np.random.default_rng(3).integers(0, VOCAB, (1, 16))
    fine_tuned, converted = _our_logits(workdir, tokens, step=3), _hf_logits(hf_model, tokens)
    # Three small steps from the converted weights: close to them, but not equal.
    assert 1e-4 < np.abs(fine_tuned - converted).max() < 0.5 * np.abs(converted).max()
    result = tool("tools/generate.py", f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=5",
                  "--temperature=0")
    assert "step 3" in result.stderr


def test_sentencepiece_tokenizer_comes_along_and_greedy_decoding_matches(trained_tiny_workdir, tmp_path):
    """An HF directory with a sentencepiece tokenizer.model (as Llama checkpoints have) imports
    into a workdir pretrained.load accepts, and our cached greedy decoding of the imported
    Llama picks the same tokens as transformers' generate."""
    from lm import generate, sampling  # noqa: PLC0415

    hf_model = _random_hf_model("llama_gqa_untied", seed=1)
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer_bytes = open(os.path.join(trained_tiny_workdir, "tokenizer.model"), "rb").read()
    (tmp_path / "hf" / "tokenizer.model").write_bytes(tokenizer_bytes)
    workdirs.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"))
    assert (tmp_path / "ours" / "tokenizer.model").read_bytes() == tokenizer_bytes

    loaded = pretrained.load(str(tmp_path / "ours"))
    prompt = loaded.tokenizer.encode("ROMEO: my lord")
    gen = generate.GenerationConfig(max_new_tokens=12, sampler=sampling.Sampler(temperature=0.0))
    ours = generate.generate(loaded.model, loaded.params, [prompt], gen).tokens[0]
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == theirs


def test_scanned_layers_export_as_per_layer_tensors():
    """A model trained with model.scan_layers stacks its layers on a leading axis; export
    unstacks them into the per-layer tree the converters read, with the same function."""
    import dataclasses  # noqa: PLC0415

    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415

    from lm import models  # noqa: PLC0415
    from lm.config import ModelConfig  # noqa: PLC0415

    config = ModelConfig(vocab_size=64, num_layers=3, embed_dim=32, num_heads=2, mlp_dim=64, max_len=16,
                         positions="rotary", norm="rmsnorm", mlp_activation="swiglu", use_bias=False,
                         scan_layers=True)
    tokens = np.arange(16)[None] % 64
    scanned = models.build(config)
    params = jax.tree.map(np.asarray, nn.meta.unbox(scanned.init(jax.random.PRNGKey(0), tokens)["params"]))
    unstacked = core.unstack_layers(params)
    assert sorted(unstacked["decoder"]) == ["layer_0", "layer_1", "layer_2"]
    plain = models.build(dataclasses.replace(config, scan_layers=False))
    np.testing.assert_allclose(plain.apply({"params": unstacked}, tokens), scanned.apply({"params": params}, tokens),
                               atol=1e-5)


@pytest.mark.slow  # a short T5 fine-tune and a decode: ~1-2 min on the shared 2-core machine
def test_imported_t5_fine_tunes_with_init_from_and_evaluates(trained_tiny_workdir, tmp_path, capsys):
    """A T5 checkpoint from transformers starts a seq2seq fine-tune (config.init_from) whose
    workdir tools/evaluate.py's library path decodes and scores."""
    import dataclasses  # noqa: PLC0415
    import json  # noqa: PLC0415

    from conftest import CORPUS  # noqa: PLC0415
    from lm import evaluation, trainer  # noqa: PLC0415

    _random_hf_model("t5_unscaled").save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(
        open(os.path.join(trained_tiny_workdir, "tokenizer.model"), "rb").read())
    imported = str(tmp_path / "imported")
    workdirs.import_hf(str(tmp_path / "hf"), imported)
    lines = [line for line in CORPUS.read_text().split("\n") if len(line.split()) > 3][:120]
    for name, chunk in (("train", lines[:100]), ("dev", lines[100:])):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for line in chunk:
                words = line.split()
                f.write(json.dumps({"a": " ".join(words[:len(words) // 2]), "b": " ".join(words[len(words) // 2:])})
                        + "\n")
    config = pretrained.read_config(imported)
    config = dataclasses.replace(
        config, init_from=imported,
        data=dataclasses.replace(config.data, train_files=str(tmp_path / "train.jsonl"),
                                 validation_files=str(tmp_path / "dev.jsonl")),
        seq2seq=dataclasses.replace(config.seq2seq, input_key="a", target_key="b", input_len=32, target_len=16),
        train=dataclasses.replace(config.train, steps=4, batch_size=4, sample_tokens=4),
        eval=dataclasses.replace(config.eval, every_steps=4, max_batches=1),
        checkpoint=dataclasses.replace(config.checkpoint, every_steps=4, async_save=False))
    tuned = str(tmp_path / "tuned")
    trainer.train(config, tuned)
    assert f"init_from: params of {imported} step 0" in capsys.readouterr().out
    result = evaluation.evaluate_workdir(tuned, "validation", beam_size=1, max_examples=4, log=lambda m: None)
    assert {"bleu", "rougeL"} <= set(result.metrics) and len(result.predictions) == 4


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
    _, model, params, _ = pretrained.restore_params(str(tmp_path / "ours"), config)
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
    assert any("WordPiece (vocab.txt)" in message for message in messages), messages
    inputs = _bert_inputs()
    _, model, params, _ = pretrained.restore_params(str(tmp_path / "ours"), config)
    _assert_bert_parity(_our_bert_logits(model, params, inputs), _hf_bert_logits(hf_model, inputs), inputs[2],
                        "HF MaskedLM -> ours")


def _bert_tokenizer(tmp_path):
    """A small sentencepiece model with BERT's special pieces, as our BERT tasks need."""
    from conftest import CORPUS  # noqa: PLC0415
    from lm.config import TokenizerConfig  # noqa: PLC0415
    from lm.data import tokenizer as tokenizer_lib  # noqa: PLC0415

    tokenizer = tokenizer_lib.train([CORPUS.read_text()[:100_000]],
                                    TokenizerConfig(vocab_size=400, special_symbols="[CLS],[SEP],[MASK]"))
    path = str(tmp_path / "bert_sp.model")
    tokenizer.save(path)
    return path, tokenizer.vocab_size


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
    config = pretrained.read_config(imported)
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

    start = pretrained.restore_params(imported, pretrained.read_config(imported))[2]["encoder"]
    after = pretrained.restore_params(tuned, pretrained.read_config(tuned))[2]["encoder"]
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
             zip(jax.tree.leaves(start), jax.tree.leaves(after))]
    assert 0 < max(moved) < 0.05, "four small steps from the imported encoder: moved, but not far"

    architecture, step = workdirs.export_hf(tuned, str(tmp_path / "back"))
    assert (architecture, step) == ("bert", 4)
    assert (tmp_path / "back" / "tokenizer.model").exists()
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    inputs = _bert_inputs(vocab)
    _, model, params, _ = pretrained.restore_params(tuned, pretrained.read_config(tuned))
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
    _, model, params, _ = pretrained.restore_params(tuned, pretrained.read_config(tuned))
    _assert_bert_parity(_our_bert_logits(model, params, inputs), _hf_bert_logits(reloaded, inputs), inputs[2],
                        "tools: fine-tuned ours -> HF", min_magnitude=0.02)
