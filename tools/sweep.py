"""Run an experiment's sweep locally, print its launch commands, or report its results.

  python tools/sweep.py experiments/lr_warmup_gpt_tiny.py --workdir=runs/lr_warmup
  python tools/sweep.py experiments/lr_warmup_gpt_tiny.py --workdir=runs/lr_warmup --print-commands
  python tools/sweep.py experiments/lr_warmup_gpt_tiny.py --workdir=runs/lr_warmup --report

Points train one after another, each in DIR/<point> through tools/train.py in a subprocess.
Rerun after a kill and finished points are skipped while an interrupted one resumes from its
newest checkpoint. At the end (or with --report at any time) DIR gets results.md,
results.csv and validation.png.
"""
import argparse
import os
import subprocess
import sys
import time

from lm import sweep
from lm.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, experiment_path, points) -> int:
    failures, workdir = 0, os.path.abspath(args.workdir)  # the trainer runs from the repository root
    os.makedirs(workdir, exist_ok=True)
    for i, (name, overrides) in enumerate(points.items(), 1):
        point_workdir = os.path.join(workdir, name)
        if sweep.is_done(point_workdir):
            print(f"[{i}/{len(points)}] {name}: finished, skipping", flush=True)
            continue
        resuming = os.path.isdir(os.path.join(point_workdir, "checkpoints"))
        print(f"[{i}/{len(points)}] {name}: {'resuming' if resuming else 'starting'} "
              f"(log: {point_workdir}/log.txt)", flush=True)
        os.makedirs(point_workdir, exist_ok=True)
        command = sweep.train_command(experiment_path, point_workdir, overrides, python=sys.executable)
        started = time.time()
        with open(os.path.join(point_workdir, "log.txt"), "a") as log:
            code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
        if code == 0:
            sweep.mark_done(point_workdir, overrides, time.time() - started)
            print(f"[{i}/{len(points)}] {name}: done in {time.time() - started:.0f}s", flush=True)
        else:
            failures += 1
            print(f"[{i}/{len(points)}] {name}: FAILED (exit {code}); see {point_workdir}/log.txt", flush=True)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiments/NAME.py")
    parser.add_argument("--workdir", required=True, help="the sweep's directory; each point trains in DIR/<point>")
    parser.add_argument("--print-commands", action="store_true", help="print one tools/train.py line per point")
    parser.add_argument("--report", action="store_true", help="only write the results table and plot")
    parser.add_argument("--only", default="", help="comma separated point names to run (default: all)")
    args = parser.parse_args()
    try:
        experiment = sweep.load_experiment(args.experiment)
        points = sweep.check_points(experiment)
        if args.only:
            wanted = [n.strip() for n in args.only.split(",") if n.strip()]
            unknown = [n for n in wanted if n not in points]
            if unknown:
                raise ConfigError(f"--only names unknown points {unknown}; the points are {list(points)}")
            points = {n: points[n] for n in wanted}
    except ConfigError as error:
        sys.exit(f"config error: {error}")
    experiment_path = os.path.relpath(os.path.abspath(args.experiment), REPO)
    if args.print_commands:
        for name, overrides in points.items():
            print(sweep.shell_line(sweep.train_command(experiment_path, os.path.join(args.workdir, name), overrides)))
        return 0
    failures = 0 if args.report else _run(args, experiment_path, points)
    from lm import sweep_report  # noqa: PLC0415 (matplotlib only when a report is written)

    title = os.path.basename(args.experiment)[:-3]
    paths = sweep_report.write(args.workdir, points, title)
    print(f"report: {paths['md']}, {paths['csv']}, {paths['png']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
