"""Train (or resume) a model.

  python tools/train.py --config=configs/gpt_tiny.py --workdir=/tmp/gpt_tiny \
      [--config.train.steps=240 --config.optimizer.learning_rate=1e-3 ...]

Run it again with the same workdir and it resumes from the newest checkpoint.

Multi-host: run the same command on every host, adding
  --coordinator_address=HOST0:PORT --num_processes=N --process_id=I
(not needed on a Cloud TPU VM pod slice or under SLURM srun, where jax finds the coordinator
itself). See docs/scale.md and tools/launch.py.
"""
import sys

from lm import host_devices  # before jax

host_devices.configure(sys.argv, default=0)  # one XLA:CPU device per core: the faster default (docs/performance.md)

from absl import flags  # noqa: E402

from lm import cli, distributed, trainer  # noqa: E402

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.", required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")
flags.DEFINE_integer("cpu_devices", 0, host_devices.HELP + " Default here: one per core; 1 keeps one device "
                     "(a batch that does not divide over the cores, or Muon at tiny sizes).")
flags.DEFINE_bool("cpu_fuse_elementwise", False, host_devices.FUSE_HELP)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose checkpoints were made with a different model, "
    "tokenizer or data config (refused by default; see docs/reliability.md).")


def main(argv):
    del argv
    distributed.initialize(distributed.DistributedConfig(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value))
    trainer.train(cli.load(_CONFIG), _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)


if __name__ == "__main__":
    cli.run(main)
