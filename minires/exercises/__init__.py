"""Exercises: write the backward pass of ReLU, linear, conv2d, max-pool, batchnorm and a
residual block, and let the grader check it.

    python -m minires.exercises list
    python -m minires.exercises check batchnorm            # lessons/exercises/batchnorm.py
    python -m minires.exercises check batchnorm --file my_batchnorm.py

The templates are in lessons/exercises/ (forward given, backward left to write); the reference
solutions are in minires/exercises/solutions/. The checks are those of lesson 2.
"""

from .catalog import EXERCISES
from .cli import main
from .grader import check

__all__ = ["EXERCISES", "check", "main"]
