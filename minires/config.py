"""What defines a training run: TrainConfig, the checks of its options, and how it compares
with the config saved in a checkpoint (lesson 9 sets one up; `python -m minires train` builds one
from its options). The defaults are He et al. 2015's CIFAR-10 recipe (sec. 4.2).
"""

import math
import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import models
from .checkpoint import CheckpointError


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint so `eval` and `--resume` agree."""

    model: str = "resnet20"     # resnetN or plainN with N = 6n+2
    shortcut: str = "A"         # A (zero padding), B (projection where shapes change), C (always)
    iters: int | None = None    # total iterations; default: epochs * batches per epoch
    epochs: int | None = None   # used when iters is None; default: the paper's 64k iterations
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "paper"     # paper (/10 at 50% and 75% of the run) or cosine
    warmup: bool | None = None  # 0.01 until training error < 80%; default: on for depth >= 110
    device: str = "cpu"
    data: str | None = None     # "sample", a CIFAR-10 path, or None for the cache/download
    val: bool = False           # train on 45k, evaluate on the held-out 5k (the paper's split)
    out: str = "runs/run"
    seed: int = 0


class ConfigError(ValueError):
    """An option that cannot make a run, or a --resume whose options differ from the run's."""


def parse_model_name(name):
    """'resnet56' -> (56, True), 'plain20' -> (20, False); a clear error for anything else."""
    match = re.fullmatch(r"(resnet|plain)(\d+)", str(name))
    if not match or int(match.group(2)) < 8 or (int(match.group(2)) - 2) % 6:
        raise ConfigError(f"--model must be resnetN or plainN with N = 6n+2 >= 8 (e.g. resnet20), "
                          f"got {name!r}")
    return int(match.group(2)), match.group(1) == "resnet"


def check_config(config):
    """Raise ConfigError, naming the option, for a value that cannot make a run."""
    parse_model_name(config.model)

    def check(name, ok, want):
        if not ok:
            raise ConfigError(f"--{name} must be {want}, got {getattr(config, name)!r}")

    def whole(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    def number(value):
        return isinstance(value, (int, float, np.number)) and math.isfinite(value)

    check("shortcut", config.shortcut in models.SHORTCUTS, "one of A, B, C")
    for name in ("iters", "epochs"):
        value = getattr(config, name)
        check(name, value is None or (whole(value) and value > 0), "a whole number > 0")
    check("batch", whole(config.batch) and config.batch > 0, "a whole number > 0")
    check("lr", number(config.lr) and config.lr > 0, "a finite number > 0")
    for name in ("momentum", "weight_decay"):
        check(name, number(getattr(config, name)) and getattr(config, name) >= 0,
              "a finite number >= 0")
    check("schedule", config.schedule in ("paper", "cosine"), "paper or cosine")
    check("seed", whole(config.seed) and config.seed >= 0, "a whole number >= 0")
    check("warmup", config.warmup in (None, True, False), "True, False or None")


def config_differences(saved, config):
    """One line per option where config differs from a checkpoint's saved config (a dict).

    Where the run lives (out) and what computes it (device) may change; anything else changes
    the run itself, so a resume must not change it silently.
    """
    return [f"--{name}: {saved.get(name)!r} in the checkpoint, {value!r} now"
            for name, value in asdict(config).items()
            if name not in ("out", "device") and saved.get(name) != value]


def config_from_dict(saved, path):
    """The TrainConfig of a checkpoint's saved config; unknown options are a CheckpointError."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(saved) - known) if isinstance(saved, dict) else ["(not a dict)"]
    if unknown:
        raise CheckpointError(f"{path}: its config has options this minires lacks: {unknown}")
    return TrainConfig(**saved)
