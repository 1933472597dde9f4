"""Command line of the exercises: `python -m minires.exercises list | check NAME [--file PATH]
[--hint 1|2|3] | reset NAME`.

Exit status 0 when every checked exercise passes, 1 when one fails.
"""

import argparse
import shutil

from .catalog import EXERCISES
from .grader import check, default_file, template_file


def reset(name):
    """Put the pristine template back in lessons/exercises/, keeping the learner's file as .bak."""
    mine, pristine = default_file(name), template_file(name)
    if mine.is_file() and mine.read_text() != pristine.read_text():
        backup = mine.with_name(mine.name + ".bak")
        shutil.copyfile(mine, backup)
        print(f"your version is saved as {backup}")
    shutil.copyfile(pristine, mine)
    print(f"{mine} is the template again")


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
    checker.add_argument("--hint", type=int, choices=(1, 2, 3), default=0,
                         help="show the hints up to this one: 1 a question, 2 the direction, "
                              "3 the formula")
    resetter = commands.add_parser("reset", help="start an exercise again from its template "
                                                 "(your file is kept as NAME.py.bak)")
    resetter.add_argument("name", choices=list(EXERCISES))
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, ex in EXERCISES.items():
            print(f"{name:<10} {ex.summary} ({ex.lesson}): {default_file(name)}")
        return 0
    if args.command == "reset":
        reset(args.name)
        return 0
    if args.name == "all":
        if args.file or args.hint:
            parser.error("--file and --hint need one exercise name, not 'all'")
        results = {name: check(name) for name in EXERCISES}
        for name, passed in results.items():
            print(f"{'PASS' if passed else 'FAIL'} {name}")
        return 0 if all(results.values()) else 1
    return 0 if check(args.name, args.file, hint=args.hint) else 1
