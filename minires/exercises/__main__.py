"""`python -m minires.exercises ...`: see minires/exercises/cli.py."""

import sys

from .cli import main

sys.exit(main())
