"""What a TrainConfig builds: the network, the images, and the learning-rate schedule.

build_model(), load_data() and make_schedule() turn a config's options into the objects of a run
(He et al. 2015, sec. 4.2: the CIFAR-10 networks, the 45k/5k split, the steps of the learning
rate). train.py's Run and evaluation.py's evaluate_checkpoint() start from them; lesson 9 shows
the schedule.
"""

from . import cifar10, data, models, nn, optim
from .config import parse_model_name


def make_schedule(name, base_lr, total_iters, warmup=False, schedule_iters=None):
    """The paper's steps (/10 at 50% and 75% of the run: 32k and 48k of its 64k iterations,
    with ResNet-110's 0.1*base_lr warm-up when asked), or cosine decay to 0.

    schedule_iters (default total_iters) is the length the steps are laid out over: an extended
    run keeps its drops at 50% and 75% of its original length and trains on at the last rate.
    """
    laid_over = schedule_iters or total_iters
    if name == "paper":
        return optim.PaperSchedule(base_lr, milestones=(laid_over // 2, laid_over * 3 // 4),
                                   total_iters=total_iters,
                                   warmup_lr=base_lr / 10 if warmup else None)
    if name == "cosine":
        return optim.CosineSchedule(base_lr, total_iters)
    raise ValueError(f"schedule must be 'paper' or 'cosine', got {name!r}")


def build_model(config):
    family, depth = parse_model_name(config.model)
    nn.init.manual_seed(config.seed)
    if family == "preact_resnet":
        return models.preact_resnet(depth, shortcut=config.shortcut)
    return models.resnet_cifar(depth, shortcut=config.shortcut, residual=family == "resnet")


def load_data(config):
    """(x_train, y_train, x_eval, y_eval) as uint8 NCHW / int64, per config.data and config.val."""
    if config.data == "sample":
        x_train, y_train, x_test, y_test = cifar10.load_sample()
    else:
        x_train, y_train, x_test, y_test = cifar10.load_cifar10(config.data)
    if config.val:
        x_train, y_train, x_test, y_test = data.train_val_split(x_train, y_train)
    return x_train, y_train, x_test, y_test
