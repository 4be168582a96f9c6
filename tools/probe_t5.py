"""Does a T5 model read its input? Attention entropy per layer against uniform attention, and
the output's confidence, on validation batches (diagnostics/attention_probe.py; docs/t5.md, Measured).

  python tools/probe_t5.py --workdir=runs/t5_wiki_multi30k[,runs/multi30k,...] [--data_from=runs/multi30k]

--data_from: take the batches from that workdir's task and validation split (e.g. probe a
pretrained model on Multi30k translation pairs); default each workdir's own. Every workdir
must use the same tokenizer as the data source.
"""
from absl import flags

from lm import cli

_WORKDIRS = flags.DEFINE_list("workdir", None, "Trained t5 workdirs, comma separated.", required=True)
_DATA_FROM = flags.DEFINE_string("data_from", "", "Workdir whose task and validation split give the batches.")
_BATCHES = flags.DEFINE_integer("max_batches", 2, "Validation batches probed.")


def main(argv):
    del argv
    import dataclasses

    import jax
    import numpy as np

    from diagnostics import attention_probe
    from lm import pretrained, tasks
    from lm import workdir as workdir_lib
    from lm.config import ConfigError

    for workdir in _WORKDIRS.value:
        source = pretrained.load(workdir)
        if source.config.model.family != "t5":
            raise ConfigError(f"{workdir} is model.family={source.config.model.family!r}: the probe reads a t5 model")
        data_config = workdir_lib.read_config(_DATA_FROM.value) if _DATA_FROM.value else source.config
        data_config = dataclasses.replace(data_config, init_from="", tokenizer=source.config.tokenizer)
        task = tasks.get(data_config).pipeline
        corpus = task.prepare()
        sums = {}
        for count, batch in enumerate(task.eval_batches(corpus)):
            if count == _BATCHES.value:
                break
            for name, value in attention_probe.probe(source.model, source.params,
                                                     jax.tree.map(np.asarray, batch)).items():
                sums[name] = sums.get(name, 0.0) + value / _BATCHES.value
        print(f"{workdir} (step {source.step}) on {data_config.train.objective} validation batches")
        print("  " + " | ".join(f"{name} {sums[name]:.3f}" for name in ("nll", "accuracy", "logit_std", "max_prob")))
        for name in sorted(n for n in sums if "layer_" in n and not n.endswith(".uniform")):
            print(f"  attention entropy {name:24s} {sums[name]:.2f} nats (uniform {sums[name + '.uniform']:.2f})")


if __name__ == "__main__":
    cli.run(main)
