"""The lines every lesson script starts with: its flags, its output folder, saving figures.

A lesson (lessons/NN_topic.py) is a script and a notebook at once (jupytext percent format). As
a script it refuses a flag it does not know (a mistyped `--iter 5` is an error, not 40 silent
iterations); in Jupyter, whose kernel has flags of its own (`-f kernel.json`), it reads none and
runs with its defaults, and shows its figures inline. lessons/README.md lists the lessons.
"""

import argparse
import sys
from pathlib import Path


def in_notebook():
    return "ipykernel" in sys.modules


def parser(description, full_help):
    """A lesson's command line with --out and --full; the lesson adds its own flags to it."""
    # No abbreviations: Jupyter may pass --f=kernel.json, which is not --full.
    lesson_parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    lesson_parser.add_argument("--out", help="folder for figures and runs (default: out/ in "
                                             "the lesson's folder)")
    lesson_parser.add_argument("--full", action="store_true", help=full_help)
    return lesson_parser


def parse(lesson_parser):
    """(args, OUT): the lesson's flags and its output folder, created if needed. An unknown flag
    stops a script with a usage message; in a notebook the kernel's own flags are not the
    lesson's, so it runs with the defaults."""
    args = lesson_parser.parse_args([] if in_notebook() else None)
    here = Path.cwd() if in_notebook() else Path(sys.argv[0]).resolve().parent
    out = Path(args.out) if args.out else here / "out"
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def save(fig, path):
    """Write a matplotlib figure to path; show it too when running in a notebook."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure saved: {path}")
    if in_notebook():
        plt.show()
    plt.close(fig)
