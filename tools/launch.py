"""Launch tools/train.py on every host of a TPU VM pod slice or a SLURM GPU cluster.

  # Cloud TPU VM pod slice: one `gcloud ... ssh --worker=all` runs the command on every host;
  # jax finds the coordinator from the TPU metadata (no multi-host flags needed).
  python tools/launch.py --platform=tpu --tpu=my-v5p-64 --zone=us-east5-a --project=my-proj \
      --workdir=gs://bucket/runs/llama_7b -- --config=configs/llama_7b.py --config.mesh.fsdp=-1

  # SLURM: writes an sbatch script (one task per node, srun starts them); jax reads
  # SLURM_* variables to find the coordinator and this process's index.
  python tools/launch.py --platform=slurm --nodes=4 --gpus_per_node=8 --partition=gpu \
      --workdir=/shared/runs/llama_7b -- --config=configs/llama_7b.py

  # Any other set of hosts: explicit flags on each host (HOST0 = the first host).
  python tools/launch.py --platform=manual --hosts=h0,h1 --workdir=/shared/run -- --config=...

`--dry_run` (the default) prints what it would run and runs nothing; `--nodry_run` runs it
(tpu: the gcloud command; slurm: sbatch on the written script; manual: never, print only).
"""
import argparse
import os
import shlex
import subprocess
import sys

REPO_DIR_DEFAULT = "~/lm"


def train_command(repo_dir: str, workdir: str, train_args: list[str], extra: list[str] = (), env: str = "") -> str:
    args = [f"--workdir={workdir}", *train_args, *extra]
    return f"cd {repo_dir} && {env}.venv/bin/python tools/train.py " + " ".join(shlex.quote(a) for a in args)


def tpu_commands(opts, train_args) -> list[list[str]]:
    remote = train_command(opts.repo_dir, opts.workdir, train_args, env="LM_DISTRIBUTED=auto ")
    base = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", opts.tpu, f"--zone={opts.zone}", "--worker=all"]
    if opts.project:
        base.append(f"--project={opts.project}")
    return [base + [f"--command={remote}"]]


def slurm_script(opts, train_args) -> str:
    remote = train_command(opts.repo_dir, opts.workdir, train_args)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={opts.job_name}",
        f"#SBATCH --nodes={opts.nodes}",
        "#SBATCH --ntasks-per-node=1",  # one jax process per node drives all its GPUs
        f"#SBATCH --gpus-per-node={opts.gpus_per_node}",
        f"#SBATCH --cpus-per-task={opts.cpus_per_task}",
        f"#SBATCH --time={opts.time}",
        f"#SBATCH --output={opts.workdir}/slurm-%j.out",
    ]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    lines += [
        "set -euo pipefail",
        "# jax.distributed.initialize() reads SLURM_JOB_ID/SLURM_NTASKS/SLURM_PROCID/SLURM_STEP_NODELIST",
        "# and uses the first node as coordinator: no multi-host flags needed.",
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(remote)}",
    ]
    return "\n".join(lines) + "\n"


def manual_commands(opts, train_args) -> list[str]:
    hosts = [h for h in opts.hosts.split(",") if h]
    coordinator = f"{hosts[0]}:{opts.port}"
    return [f"ssh {host} {shlex.quote(train_command(opts.repo_dir, opts.workdir, train_args, [f'--coordinator_address={coordinator}', f'--num_processes={len(hosts)}', f'--process_id={i}']))}"
            for i, host in enumerate(hosts)]


def parse(argv):
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1:]
    else:
        train_args = []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", choices=("tpu", "slurm", "manual"), required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--repo_dir", default=REPO_DIR_DEFAULT, help="Where the repository is on every host.")
    parser.add_argument("--dry_run", dest="dry_run", action="store_true", default=True)
    parser.add_argument("--nodry_run", dest="dry_run", action="store_false")
    parser.add_argument("--tpu", default="", help="TPU VM name (platform=tpu).")
    parser.add_argument("--zone", default="", help="TPU zone (platform=tpu).")
    parser.add_argument("--project", default="")
    parser.add_argument("--nodes", type=int, default=2, help="SLURM nodes.")
    parser.add_argument("--gpus_per_node", type=int, default=8)
    parser.add_argument("--cpus_per_task", type=int, default=16)
    parser.add_argument("--partition", default="")
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--job_name", default="lm")
    parser.add_argument("--script", default="", help="Where to write the sbatch script (default: print only).")
    parser.add_argument("--hosts", default="", help="Comma-separated hosts (platform=manual).")
    parser.add_argument("--port", type=int, default=8476)
    opts = parser.parse_args(argv)
    if opts.platform == "tpu" and not (opts.tpu and opts.zone):
        parser.error("--platform=tpu needs --tpu and --zone")
    if opts.platform == "manual" and not opts.hosts:
        parser.error("--platform=manual needs --hosts")
    return opts, train_args


def main(argv=None):
    opts, train_args = parse(sys.argv[1:] if argv is None else argv)
    prefix = "[dry run] would run:" if opts.dry_run else "running:"
    if opts.platform == "tpu":
        for command in tpu_commands(opts, train_args):
            print(prefix, " ".join(shlex.quote(c) for c in command))
            if not opts.dry_run:
                subprocess.run(command, check=True)
    elif opts.platform == "slurm":
        script = slurm_script(opts, train_args)
        path = opts.script or os.path.join(opts.workdir, "launch.sbatch")
        print(f"{prefix} sbatch {path}\n--- {path} ---\n{script}", end="")
        if not opts.dry_run:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(script)
            subprocess.run(["sbatch", path], check=True)
    else:
        print("[dry run] run on each host (start them together; process 0 first):")
        for command in manual_commands(opts, train_args):
            print(command)


if __name__ == "__main__":
    main()
