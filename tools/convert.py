"""Move weights between Hugging Face transformers and our workdirs (GPT-2, Llama, T5 v1.0, BERT).

  # import: config.json + safetensors -> a workdir tools/train.py and tools/generate.py accept
  python tools/convert.py --from_hf=HF_DIR --workdir=DIR [--tokenizer=PATH.model or tokenizer.json]
  # export: a workdir's checkpoint -> a directory transformers' from_pretrained loads
  python tools/convert.py --to_hf=HF_DIR --workdir=DIR [--step=N] [--architecture=gpt2|llama|t5|bert]

Fine-tune an imported workdir (its config.json is the config; init_from loads its params):
  python tools/train.py --config=configs/workdir.py:DIR --workdir=NEW_DIR --config.init_from=DIR \
      --config.train.steps=200 --config.data.train_files=MY_TEXT
Pickled PyTorch weights are refused; safetensors only. See docs/interop.md.
"""
import time

from absl import flags

from lm import cli, interop
from lm.config import ConfigError
from lm.interop import workdirs

_FROM_HF = flags.DEFINE_string("from_hf", "", "A Hugging Face model directory to import into --workdir.")
_TO_HF = flags.DEFINE_string("to_hf", "", "A directory to write --workdir's checkpoint to, in Hugging Face format.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Our workdir (written on import, read on export).", required=True)
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Import: a sentencepiece .model or a Hugging Face tokenizer.json "
                                 "matching the checkpoint's ids (default: the HF directory's tokenizer.model, else "
                                 "its tokenizer.json).")
_STEP = cli.define_step_flag()  # export: which checkpoint
_ARCHITECTURE = flags.DEFINE_enum("architecture", "", ["", *interop.ARCHITECTURES],
                                  "Export: the Hugging Face architecture; default: the one the model's shape is.")


def main(argv):
    del argv
    if bool(_FROM_HF.value) == bool(_TO_HF.value):
        raise ConfigError("give exactly one of --from_hf=HF_DIR (import) or --to_hf=HF_DIR (export)")
    started = time.time()
    if _FROM_HF.value:
        config = workdirs.import_hf(_FROM_HF.value, _WORKDIR.value, _TOKENIZER.value)
        m = config.model
        print(f"imported {_FROM_HF.value} into {_WORKDIR.value} (step 0): {m.num_layers} layers, width "
              f"{m.embed_dim}, vocabulary {m.vocab_size}, {m.positions} positions, {m.norm}, {m.mlp_activation} "
              f"in {time.time() - started:.1f}s")
    else:
        architecture, step = workdirs.export_hf(_WORKDIR.value, _TO_HF.value, _STEP.value, _ARCHITECTURE.value)
        print(f"exported {_WORKDIR.value} step {step} as {architecture} to {_TO_HF.value} "
              f"in {time.time() - started:.1f}s")


if __name__ == "__main__":
    cli.run(main)
