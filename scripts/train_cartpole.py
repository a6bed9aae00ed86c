"""The CartPole run of docs/training.md ("Neural policies on Gymnasium environments"): one
``pgvar train --env`` call, four estimators from the same initial weights, its summary table on stdout
and its plot copied to docs/train-cartpole.png.

    .venv/bin/python scripts/train_cartpole.py                  # about 1.5 minutes on 2 cores
    .venv/bin/python scripts/train_cartpole.py --out DIR        # keep the CSV, Parquet, JSON and SVG
    .venv/bin/python scripts/train_cartpole.py --figure ''      # leave docs/train-cartpole.png alone

``scripts/docs_examples.py --slow`` runs it (the example ``train-cartpole``), so regenerating the
doc's table also redraws the figure from the same run.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "train-cartpole.png"
ARGS = (
    "train",
    "--env", "CartPole-v1,gamma=0.99,horizon=200",
    "--policy", "mlp:64,64",
    "-e", "vanilla,rtg,rtg+base,gae0.95+value",
    "--N", "16",
    "--updates", "60",
    "--runs", "3",
    "--seed", "0",
)  # fmt: skip


def run_pgvar(args: list[str]) -> int:
    """``pgvar ARGS`` in this process; its exit code."""
    from pgvar.cli import main

    old = sys.argv
    sys.argv = ["pgvar", *args]
    try:
        main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    finally:
        sys.argv = old
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the run's files here (a new directory)")
    parser.add_argument("--figure", default=str(FIGURE), help="copy curves.png here ('' for nowhere)")
    args = parser.parse_args(argv)
    print(f"pgvar {shlex.join(ARGS)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pgvar-cartpole-") as tmp:
        out = args.out if args.out is not None else Path(tmp) / "run"
        code = run_pgvar([*ARGS, "--out", str(out)])
        if code == 0 and args.figure:
            shutil.copyfile(out / "curves.png", args.figure)
    return code


if __name__ == "__main__":
    sys.exit(main())
