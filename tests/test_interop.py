"""Hugging Face interop: small random GPT-2, Llama and T5 models built with transformers (no hub)
convert to our workdirs and back with equal logits, and imported workdirs train and generate
(BERT: tests/test_interop_bert.py)."""

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


def _our_logits(workdir, tokens, step="best"):
    loaded = pretrained.load(workdir, step, require_tokenizer=False)
    return np.asarray(loaded.model.apply({"params": loaded.params}, *(tokens if isinstance(tokens, tuple) else (tokens,))))


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
    with pytest.raises(pretrained.ConfigError, match="--tokenizer=PATH`"):
        workdir_lib.read_config(str(tmp_path / "no_tokenizer"))


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
    config = workdir_lib.read_config(imported)
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
    assert f"parameters from step 0 of {imported}" in capsys.readouterr().out
    result = evaluation.evaluate_workdir(tuned, "validation", beam_size=1, max_examples=4, log=lambda m: None)
    assert {"bleu", "rougeL"} <= set(result.metrics) and len(result.predictions) == 4
