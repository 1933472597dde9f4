"""Command line of the exercises: `python -m minires.exercises list | check NAME [--file PATH]`.

Exit status 0 when every checked exercise passes, 1 when one fails.
"""

import argparse

from .catalog import EXERCISES
from .grader import check, default_file


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minires.exercises",
        description="Check your backward passes against the reference and central differences.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the exercises and where their templates are")
    checker = commands.add_parser("check", help="check one exercise (or 'all')")
    checker.add_argument("name", choices=list(EXERCISES) + ["all"])
    checker.add_argument("--file", help="the file to check (default: the template in "
                                        "lessons/exercises/)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, ex in EXERCISES.items():
            print(f"{name:<10} {ex.summary} ({ex.lesson}): {default_file(name)}")
        return 0
    if args.name == "all":
        if args.file:
            parser.error("--file needs one exercise name, not 'all'")
        results = {name: check(name) for name in EXERCISES}
        for name, passed in results.items():
            print(f"{'PASS' if passed else 'FAIL'} {name}")
        return 0 if all(results.values()) else 1
    return 0 if check(args.name, args.file) else 1
