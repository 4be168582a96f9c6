"""Draw loss (train and validation) and learning-rate curves of one or more runs to a PNG.

  python tools/plot.py runs/gpt_tiny runs/lr3e-3 --output=runs/compare.png

Reads each workdir's metrics.jsonl (the machine-readable record tools/train.py writes).
Default output: curves.png in the first workdir.
"""
import argparse
import os
import sys

from lm import plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", help="workdirs written by tools/train.py")
    parser.add_argument("--output", default="", help="the PNG to write (default: FIRST_WORKDIR/curves.png)")
    args = parser.parse_args()
    output = args.output or os.path.join(args.workdirs[0], "curves.png")
    try:
        plots.plot_runs(args.workdirs, output)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    print(output)


if __name__ == "__main__":
    main()
