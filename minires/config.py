"""What defines a training run: TrainConfig, the checks of its options, and how it compares
with the config saved in a checkpoint (lesson 9 sets one up; `python -m minires train` builds one
from its options). The defaults are He et al. 2015's CIFAR-10 recipe (sec. 4.2).
"""

import math
import re
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from . import models
from .checkpoint import CheckpointError

PAPER_ITERATIONS = 64000  # He et al. 2015, sec. 4.2: "terminate training at 64k iterations"
LENGTH = ("iters", "epochs", "schedule_iters")  # how long a run is; an extension changes them


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint so `eval` and `--resume` agree."""

    model: str = "resnet20"     # resnetN, plainN or preact_resnetN with N = 6n+2
    shortcut: str = "A"         # A (zero padding), B (projection where shapes change), C (always)
    iters: int | None = None    # total iterations; default: epochs * batches per epoch
    epochs: int | None = None   # used when iters is None; default: the paper's 64k iterations
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "paper"     # paper (/10 at 50% and 75% of the run) or cosine
    # The iterations the schedule is laid out over; None: the whole run. An extension (--resume
    # with a longer --iters) sets it to the original length, so the paper's drops stay put.
    schedule_iters: int | None = None
    warmup: bool | None = None  # 0.01 until training error < 80%; default: on for depth >= 110
    device: str = "cpu"
    data: str | None = None     # "sample", a CIFAR-10 path, or None for the cache/download
    val: bool = False           # train on 45k, evaluate on the held-out 5k (the paper's split)
    out: str = "runs/run"
    seed: int = 0


class ConfigError(ValueError):
    """An option that cannot make a run, or a --resume whose options differ from the run's."""


def parse_model_name(name):
    """'resnet56' -> ("resnet", 56), 'plain20' -> ("plain", 20), 'preact_resnet110' ->
    ("preact_resnet", 110); a clear error for anything else."""
    match = re.fullmatch(r"(resnet|plain|preact_resnet)(\d+)", str(name))
    if not match or int(match.group(2)) < 8 or (int(match.group(2)) - 2) % 6:
        raise ConfigError(f"--model must be resnetN, plainN or preact_resnetN with N = 6n+2 >= 8 "
                          f"(e.g. resnet20), got {name!r}")
    return match.group(1), int(match.group(2))


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
    for name in ("iters", "epochs", "schedule_iters"):
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
    if config.schedule == "cosine" and config.schedule_iters is not None:
        raise ConfigError(f"a cosine schedule cannot be extended: its rate reaches 0 at the end "
                          f"of the original {config.schedule_iters} iterations, and would stay "
                          f"0; add --change-config to lay the cosine over the new length")


def run_length(config, per_epoch):
    """The total iterations of a run: --iters, or --epochs whole epochs of per_epoch iterations
    (default: the paper's 64k iterations, rounded up to whole epochs)."""
    if config.iters is not None:
        return config.iters
    epochs = config.epochs
    if epochs is None:
        epochs = math.ceil(PAPER_ITERATIONS / per_epoch)
    return epochs * per_epoch


def config_differences(saved, config, ignore=()):
    """One line per option where config differs from a checkpoint's saved config (a dict).

    Where the run lives (out) and what computes it (device) may change; anything else changes
    the run itself, so a resume must not change it silently.
    """
    return [f"--{name.replace('_', '-')}: {saved.get(name)!r} in the checkpoint, {value!r} now"
            for name, value in asdict(config).items()
            if name not in ("out", "device", *ignore) and saved.get(name) != value]


def resumed_config(saved, config, per_epoch, change_config=False):
    """The config that a --resume of the run saved with `saved` (a dict) continues with.

    A longer run than the saved one is an extension: it trains on to the new length with the
    schedule the run had, laid out over its original length (schedule_iters), so the paper's
    drops stay where they were and the extra iterations train at the last rate. A length equal to
    the saved one, given as --epochs rather than --iters or the other way round, is no change.
    A shorter run, or any other difference, is a ConfigError, unless change_config: then the run
    continues as if it had been started with config (its schedule laid over config's length).
    """
    old = run_length(config_from_dict(saved, "the checkpoint"), per_epoch)
    new = run_length(config, per_epoch)
    if not change_config:
        if new < old:
            raise ConfigError(f"--resume: the run in {config.out} is {old} iterations long, and "
                              f"--resume extends a run but does not shorten it to {new}; add "
                              f"--change-config to continue as if it had been started that long")
        length = {name: saved.get(name) for name in LENGTH}
        if new == old:
            config = replace(config, **length)
        else:
            config = replace(config, schedule_iters=length["schedule_iters"] or old)
        differences = config_differences(saved, config, ignore=LENGTH)
        if differences:
            raise ConfigError(f"--resume: the options differ from the run in {config.out}: "
                              + "; ".join(differences) + ". Leave them out to continue the run "
                              "as it was, or add --change-config to continue with them")
    return config


def config_from_dict(saved, path):
    """The TrainConfig of a checkpoint's saved config; unknown options are a CheckpointError."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(saved) - known) if isinstance(saved, dict) else ["(not a dict)"]
    if unknown:
        raise CheckpointError(f"{path}: its config has options this minires lacks: {unknown}")
    return TrainConfig(**saved)
