"""The training loop behind `python -m minires train` and lessons 8-9 (He et al. 2015, sec. 4.2).

One run: data, model, SGD with a per-iteration learning-rate schedule, evaluation each epoch,
metrics (CSV + JSON summary), an atomic checkpoint each epoch, exact resume, and the paper's
Fig. 6-style plot of training and test error against iterations.
"""

import csv
import json
import math
import os
import pickle
import re
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import data, models, nn, optim
from .backends import to_device
from .function import no_grad
from .ops.loss import cross_entropy


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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def parse_model_name(name):
    """'resnet56' -> (56, True), 'plain20' -> (20, False); a clear error for anything else."""
    match = re.fullmatch(r"(resnet|plain)(\d+)", name)
    if not match:
        raise ValueError(f"model must be resnetN or plainN (N = 6n+2, e.g. resnet20), got {name!r}")
    return int(match.group(2)), match.group(1) == "resnet"


def make_schedule(name, base_lr, total_iters, warmup=False):
    """The paper's steps (/10 at 50% and 75% of the run: 32k and 48k of its 64k iterations,
    with ResNet-110's 0.1*base_lr warm-up when asked), or cosine decay to 0."""
    if name == "paper":
        return optim.PaperSchedule(base_lr, milestones=(total_iters // 2, total_iters * 3 // 4),
                                   total_iters=total_iters,
                                   warmup_lr=base_lr / 10 if warmup else None)
    if name == "cosine":
        return optim.CosineSchedule(base_lr, total_iters)
    raise ValueError(f"schedule must be 'paper' or 'cosine', got {name!r}")


def build_model(config):
    depth, residual = parse_model_name(config.model)
    nn.init.manual_seed(config.seed)
    return models.resnet_cifar(depth, shortcut=config.shortcut, residual=residual)


def load_data(config):
    """(x_train, y_train, x_eval, y_eval) as uint8 NCHW / int64, per config.data and config.val."""
    if config.data == "sample":
        x_train, y_train, x_test, y_test = data.load_sample()
    else:
        x_train, y_train, x_test, y_test = data.load_cifar10(config.data)
    if config.val:
        x_train, y_train, x_test, y_test = data.train_val_split(x_train, y_train)
    return x_train, y_train, x_test, y_test


def evaluate(model, loader):
    """(mean loss, error rate) of model over loader, in evaluation mode, without a graph."""
    was_training = model.training
    model.eval()
    total_loss, wrong, count = 0.0, 0, 0
    with no_grad():
        for x, y in loader:
            logits = model(x)
            total_loss += cross_entropy(logits, y).item() * len(y)
            wrong += int((logits.data.argmax(axis=1) != y).sum())
            count += len(y)
    model.train(was_training)
    return total_loss / count, wrong / count


def save_checkpoint(path, state):
    """Write state atomically: a temporary file in the same folder, flushed, then renamed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(state, f, protocol=4)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        os.unlink(tmp)
        raise


def load_checkpoint(path):
    """A checkpoint written by save_checkpoint. It is a pickle: load only files you trust."""
    with open(path, "rb") as f:
        return pickle.load(f)


def _to_cpu(state):
    """Nested dicts/lists of backend arrays -> the same with NumPy arrays (for pickling)."""
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    if hasattr(state, "shape") and hasattr(state, "dtype"):
        return to_device(state, "cpu")
    return state


class Run:
    """A training run: build it from a TrainConfig, then call fit(). Holds the live objects."""

    def __init__(self, config):
        self.config = config
        x_train, y_train, x_eval, y_eval = load_data(config)
        self.mean, self.std = data.channel_stats(x_train)
        self.train_loader = data.DataLoader(
            x_train, y_train, config.batch, shuffle=True, drop_last=True, augment=True,
            mean=self.mean, std=self.std, seed=config.seed, device=config.device)
        self.eval_loader = data.DataLoader(
            x_eval, y_eval, 500, mean=self.mean, std=self.std, device=config.device)
        per_epoch = len(self.train_loader)
        if config.iters is None:
            epochs = config.epochs if config.epochs is not None else math.ceil(64000 / per_epoch)
            self.total_iters = epochs * per_epoch
        else:
            self.total_iters = config.iters
        self.epochs = math.ceil(self.total_iters / per_epoch)
        self.model = build_model(config).to(config.device)
        self.optimizer = optim.SGD(self.model.parameters(), lr=config.lr,
                                   momentum=config.momentum, weight_decay=config.weight_decay)
        depth = parse_model_name(config.model)[0]
        warmup = config.warmup if config.warmup is not None else depth >= 110
        self.schedule = make_schedule(config.schedule, config.lr, self.total_iters, warmup)
        self.iteration, self.epoch = 0, 0
        self.history = []  # one row per epoch: training and test loss and error
        self.steps = []  # one row per iteration: iteration, lr, batch loss, batch error
        self.checkpoint_path = os.path.join(config.out, "checkpoint.pkl")

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self):
        return _to_cpu({
            "config": asdict(self.config), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "loader": self.train_loader.state_dict(), "iteration": self.iteration,
            "epoch": self.epoch, "history": self.history, "steps": self.steps,
            "mean": self.mean, "std": self.std,
        })

    def resume(self, path=None):
        """Continue exactly where the checkpoint at path (default: this run's) left off."""
        state = load_checkpoint(path or self.checkpoint_path)
        self.model.load_state_dict(state["model"])
        self.model.to(self.config.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.train_loader.load_state_dict(state["loader"])
        self.iteration, self.epoch = state["iteration"], state["epoch"]
        self.history, self.steps = state["history"], state["steps"]

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, progress=True, on_epoch_end=None):
        """Train until total_iters; returns the summary dict (also written as summary.json)."""
        from tqdm.auto import tqdm

        config = self.config
        os.makedirs(config.out, exist_ok=True)
        bar = tqdm(total=self.total_iters, initial=self.iteration, disable=not progress,
                   desc=config.model, unit="it", dynamic_ncols=True)
        self.model.train()
        while self.iteration < self.total_iters:
            self.train_loader.set_epoch(self.epoch)
            start, seen, wrong, loss_sum = time.perf_counter(), 0, 0, 0.0
            for x, y in self.train_loader:
                if self.iteration >= self.total_iters:
                    break
                # The warm-up of ResNet-110 ends once this epoch's running training error < 80%.
                lr = self.schedule.lr(self.iteration, train_error=wrong / seen if seen else 1.0)
                self.optimizer.lr = lr
                logits = self.model(x)
                loss = cross_entropy(logits, y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    bar.close()
                    raise TrainingDiverged(
                        f"the loss became {loss_value} at iteration {self.iteration} "
                        f"(learning rate {lr:g}); stopping. The last good checkpoint is kept "
                        f"at {self.checkpoint_path}; try a lower --lr")
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                batch_wrong = int((logits.data.argmax(axis=1) != y).sum())
                self.steps.append({"iteration": self.iteration + 1, "lr": lr, "loss": loss_value,
                                   "error": batch_wrong / len(y)})
                seen, wrong = seen + len(y), wrong + batch_wrong
                loss_sum += loss_value * len(y)
                self.iteration += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{1 - wrong / seen:.3f}",
                                img_s=f"{seen / (time.perf_counter() - start):.0f}", lr=f"{lr:g}")
            self.epoch += 1
            train_time = time.perf_counter() - start
            eval_loss, eval_error = evaluate(self.model, self.eval_loader)
            self.history.append({
                "epoch": self.epoch, "iteration": self.iteration, "lr": lr,
                "train_loss": loss_sum / seen, "train_error": wrong / seen,
                "test_loss": eval_loss, "test_error": eval_error,
                "images_per_s": seen / train_time, "epoch_time_s": train_time,
            })
            bar.write(f"epoch {self.epoch}: train error {wrong / seen:.4f}, "
                      f"{'val' if config.val else 'test'} error {eval_error:.4f}")
            save_checkpoint(self.checkpoint_path, self.state_dict())
            self._write_metrics()
            if on_epoch_end is not None:
                on_epoch_end(self)
        bar.close()
        return self._finish()

    def _write_metrics(self):
        for name, rows in [("metrics.csv", self.history), ("steps.csv", self.steps)]:
            with open(os.path.join(self.config.out, name), "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    def _finish(self):
        last = self.history[-1]
        summary = {
            "model": self.config.model, "iterations": self.iteration, "epochs": self.epoch,
            "test_accuracy": 1 - last["test_error"], "train_accuracy": 1 - last["train_error"],
            "evaluated_on": "validation (5k)" if self.config.val else "test",
            "images_per_s": last["images_per_s"],
            "plot": plot_curves(self.history, self.steps,
                                os.path.join(self.config.out, "curves.png"), self.config.model),
            "checkpoint": self.checkpoint_path, "config": asdict(self.config),
        }
        with open(os.path.join(self.config.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return summary


def train(config, resume=False, progress=True, on_epoch_end=None):
    """Run (or with resume=True, continue) a training run; returns its summary."""
    run = Run(config)
    if resume:
        if not os.path.exists(run.checkpoint_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {run.checkpoint_path}")
        run.resume()
    return run.fit(progress=progress, on_epoch_end=on_epoch_end)


def smooth(values, window):
    """Mean of each value with the up to window-1 values before it (a trailing moving average)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def plot_curves(history, steps, path, title):
    """Training error (thin: per iteration, smoothed over ~an epoch's tenth) and test error
    (bold: per epoch) against iterations, as in the paper's Fig. 6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    window = max(1, history[0]["iteration"] // 10)
    ax.plot([s["iteration"] for s in steps], 100 * smooth([s["error"] for s in steps], window),
            "-", lw=1, label=f"train error (mean of {window} iterations)")
    ax.plot([h["iteration"] for h in history], [100 * h["test_error"] for h in history], "-o",
            lw=2, label="test error")
    ax.set(xlabel="iterations", ylabel="error (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_checkpoint(path, data_path=None, device="cpu"):
    """(loss, error) on the test set of the model saved at path; data_path overrides its data."""
    state = load_checkpoint(path)
    config = TrainConfig(**state["config"])
    model = build_model(config)
    model.load_state_dict(state["model"])
    model.to(device)
    config.data = data_path if data_path is not None else config.data
    config.val = False
    *_, x_test, y_test = load_data(config)
    loader = data.DataLoader(x_test, y_test, 500, mean=state["mean"], std=state["std"],
                             device=device)
    return evaluate(model, loader)
