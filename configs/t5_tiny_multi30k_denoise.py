"""t5_tiny_multi30k_denoise: t5_tiny pretrained by full-reconstruction denoising on WikiText-2
plus Multi30k's monolingual training text, in T5's parametrisation: the recipe whose transfer
shows in Multi30k BLEU (docs/t5.md, "Denoising pretraining", session 8).

python tools/train.py --config=configs/t5_tiny_multi30k_denoise.py --workdir=runs/t5_denoise
python tools/train.py --config=configs/finetune_multi30k.py --workdir=runs/multi30k_denoise \
    --config.init_from=runs/t5_denoise --config.model.init=fan_in --config.model.scale_decoder_outputs=true \
    --config.finetune.init_shrink=1.0 --config.finetune.init_perturb=0.0 --config.optimizer.learning_rate=3e-3

The same corpus, tokenizer and 1,500 steps as configs/t5_tiny_multi30k.py. What differs:
- train.objective=denoise: the encoder reads the window with 15% of it in sentinel-replaced
  spans (span corruption's inputs) and the decoder writes the whole window back, so
  pretraining teaches full-length output conditioned on the whole input, as translation needs;
- T5's parametrisation (fan-in init, decoder output scaled by d_model^-0.5), under which
  attention leaves uniform in pretraining (docs/t5.md, the probe); the fine-tune must use it
  too (init_from refuses a different output scaling), and its scratch baseline as well;
- weight decay 0.1: the fine-tune takes the pretrained params as they are, not shrunk.
"""
from configs import t5_tiny_multi30k


def get_config():
    config = t5_tiny_multi30k.get_config()
    config.train.objective = "denoise"
    config.model.init = "fan_in"
    config.model.scale_decoder_outputs = True
    config.optimizer.weight_decay = 0.1
    return config
