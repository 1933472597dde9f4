"""The training loop behind `python -m minires train` and lessons 8-9 (He et al. 2015, sec. 4.2).

One run: data, model, SGD with a per-iteration learning-rate schedule, evaluation each epoch,
metrics (CSV + JSON summary), an atomic checkpoint each epoch, exact resume, and the paper's
Fig. 6-style plot of training and test error against iterations. train() never loses a run: it
refuses a folder that holds one unless told to resume it (with the same options) or overwrite it.
What a config builds (model, data, schedule) is in builders.py; evaluate() and evaluating a saved
checkpoint (`python -m minires eval`) in evaluation.py.
"""

import json
import math
import os
import time
from dataclasses import asdict

from . import checkpoint, data, optim
from .backends import get_array_module, to_device
from .builders import build_model, load_data, make_schedule
from .checkpoint import CheckpointError
from .config import (  # noqa: F401 (TrainConfig and its checks are part of this module's API)
    PAPER_ITERATIONS,
    ConfigError,
    TrainConfig,
    check_config,
    config_differences,
    config_from_dict,
    parse_model_name,
    resumed_config,
    run_length,
)
from .evaluation import evaluate
from .ops.loss import cross_entropy
from .report import (  # noqa: F401 (lesson 9 calls smooth)
    plot_curves,
    recipe,
    resume_note,
    smooth,
    write_metrics,
)

CHECKPOINT = "checkpoint.npz"  # in config.out; checkpoint.py says why it is not a pickle
# Files that say a folder holds a run (checkpoint.pkl: the pickles of minires 0.1).
RUN_FILES = (CHECKPOINT, "checkpoint.pkl", "metrics.csv", "summary.json")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says which checkpoint (if any) is kept."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where its last checkpoint is."""


# The names lesson 9 uses: an atomic .npz + JSON write, and a read that can run no code.
save_checkpoint, load_checkpoint = checkpoint.save_run, checkpoint.load_run


def _to_cpu(state):
    """Nested dicts/lists of backend arrays -> the same with NumPy arrays (for saving)."""
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    if hasattr(state, "shape") and hasattr(state, "dtype"):
        return to_device(state, "cpu")
    return state


def check_running_statistics(model):
    """Raise FloatingPointError naming the first batchnorm buffer that is no longer finite:
    activations too large for float32 drive running_var to inf while the loss stays finite (x_hat
    is then 0), and every later evaluation would be nonsense. The loop calls this once an epoch,
    not every step: on a GPU each read waits for the device."""
    for name, buffer in model.named_buffers():
        if not get_array_module(buffer).isfinite(buffer).all():
            raise FloatingPointError(f"the batchnorm statistic {name} is no longer finite (the "
                                     "activations overflowed)")


def train_step(model, batch, optimizer):
    """One iteration of SGD: forward, cross-entropy loss, backward, update. Returns the loss (a
    float) and the logits. A loss that is not finite raises FloatingPointError before the update,
    so the weights stay as they were."""
    x, y = batch
    logits = model(x)
    loss = cross_entropy(logits, y)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"the loss became {loss_value}")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss_value, logits


class Run:
    """A training run: build it from a TrainConfig, then call fit(). Holds the live objects."""

    def __init__(self, config, cuda_graph=False):
        self.config = config
        check_config(config)
        self.train_step = train_step
        if cuda_graph:  # the same step, captured once and replayed (backends/cuda/graph.py)
            from .backends.cuda.graph import GraphedStep

            self.train_step = GraphedStep(train_step, cross_entropy)
        x_train, y_train, x_eval, y_eval = load_data(config)
        if config.batch > len(x_train):
            raise ConfigError(f"--batch {config.batch} is larger than the training set "
                              f"({len(x_train)} images); use --batch {len(x_train)} or less")
        self.mean, self.std = data.channel_stats(x_train)
        self.train_loader = data.DataLoader(
            x_train, y_train, config.batch, shuffle=True, drop_last=True, augment=True,
            mean=self.mean, std=self.std, seed=config.seed, device=config.device)
        self.eval_loader = data.DataLoader(
            x_eval, y_eval, 500, mean=self.mean, std=self.std, device=config.device)
        self.per_epoch = len(self.train_loader)
        self.total_iters = run_length(config, self.per_epoch)
        self.epochs = math.ceil(self.total_iters / self.per_epoch)
        self.model = build_model(config).to(config.device)
        self.optimizer = optim.SGD(self.model.parameters(), lr=config.lr,
                                   momentum=config.momentum, weight_decay=config.weight_decay)
        depth = parse_model_name(config.model)[1]
        self.warmup = config.warmup if config.warmup is not None else depth >= 110
        self.schedule = make_schedule(config.schedule, config.lr, self.total_iters, self.warmup,
                                      config.schedule_iters)
        self.iteration, self.epoch = 0, 0
        self.history = []  # one row per epoch: training and test loss and error
        self.steps = []  # one row per iteration: iteration, lr, batch loss, batch error
        self.checkpoint_path = os.path.join(config.out, CHECKPOINT)
        self.saved_iteration = None  # the iteration of this run's checkpoint on disk, if any

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self):
        return _to_cpu({
            "config": asdict(self.config), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "loader": self.train_loader.state_dict(), "iteration": self.iteration,
            "epoch": self.epoch, "history": self.history, "steps": self.steps,
            "mean": self.mean, "std": self.std, "iters_per_epoch": self.per_epoch,
        })

    def resume(self, path=None):
        """Continue exactly where the checkpoint at path (default: this run's) left off."""
        path = path or self.checkpoint_path
        self.load_state(load_checkpoint(path), path)

    def load_state(self, state, path):
        """Take over a checkpoint's state (read from path, which error messages name)."""
        try:
            self.model.load_state_dict(state["model"])
            self.model.to(self.config.device)
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.train_loader.load_state_dict(state["loader"])
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{path}: does not fit this run: {e}") from e
        self.iteration, self.epoch = int(state["iteration"]), int(state["epoch"])
        self.history, self.steps = state["history"], state["steps"]
        self.saved_iteration = self.iteration

    def where_saved(self):
        """Where the last good state is, for messages after a stop."""
        if self.saved_iteration is None:
            return ("no checkpoint was written (the first comes at the end of epoch 1, after "
                    f"{len(self.train_loader)} iterations)")
        return (f"the checkpoint of iteration {self.saved_iteration} is kept at "
                f"{self.checkpoint_path}")

    def diverged(self, what, lr):
        """The error that stops a run whose numbers are no longer finite."""
        return TrainingDiverged(f"{what} at iteration {self.iteration} (learning rate {lr:g}); "
                                f"stopping: {self.where_saved()}; try a lower --lr")

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
                try:
                    loss_value, logits = self.train_step(self.model, (x, y), self.optimizer)
                except FloatingPointError as e:  # a loss of nan or inf
                    bar.close()
                    raise self.diverged(str(e), lr) from e
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
            try:
                check_running_statistics(self.model)  # before they are evaluated with and saved
            except FloatingPointError as e:
                bar.close()
                raise self.diverged(str(e), lr) from e
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
            self.saved_iteration = self.iteration
            write_metrics(self.config.out, self.history, self.steps)
            if on_epoch_end is not None:
                on_epoch_end(self)
        bar.close()
        return self._finish()

    def _finish(self):
        last, config = self.history[-1], self.config
        title = recipe(config, self.total_iters, self.warmup and config.schedule == "paper")
        summary = {  # accuracies rounded to what they can tell: 0.41, not 0.41000000000000003
            "model": config.model, "iterations": self.iteration, "epochs": self.epoch,
            "test_accuracy": round(1 - last["test_error"], 6),
            "train_accuracy": round(1 - last["train_error"], 6),
            "evaluated_on": "validation (5k)" if config.val else "test",
            "images_per_s": round(last["images_per_s"], 1),
            "plot": plot_curves(self.history, self.steps,
                                os.path.join(config.out, "curves.png"), title),
            "checkpoint": self.checkpoint_path, "config": asdict(config),
        }
        with open(os.path.join(self.config.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return summary


def train(config, resume=False, overwrite=False, change_config=False, progress=True,
          on_epoch_end=None, cuda_graph=False):
    """Run (or with resume=True, continue) a training run; returns its summary.

    A run is never lost by accident: a folder (config.out) that holds one is an error unless
    resume=True (continue it, with the options it was started with, or with changes that
    change_config=True accepts) or overwrite=True (start afresh; its files are replaced as the
    new run writes them). What an interrupted checkpoint write left behind is removed first.
    cuda_graph=True replays each step from a CUDA graph (README: what it buys, when it cannot).
    """
    check_config(config)
    path = os.path.join(config.out, CHECKPOINT)
    state = None
    if resume:
        if not os.path.exists(path):
            old = os.path.exists(os.path.join(config.out, "checkpoint.pkl"))
            raise CheckpointError(f"{path}: no checkpoint to --resume from" + (
                " (the checkpoint.pkl beside it is a pickle of minires 0.1: pickles can run code, "
                "so this version does not read them)" if old else ""))
        state = load_checkpoint(path)
        # Only checkpoints of a run shorter than an epoch lack iters_per_epoch (it came later).
        per_epoch = state.get("iters_per_epoch") or state["history"][0]["iteration"]
        config = resumed_config(state["config"], config, per_epoch, change_config)
    elif not overwrite:
        found = [name for name in RUN_FILES if os.path.exists(os.path.join(config.out, name))]
        if found:
            raise ConfigError(f"{config.out} already holds a run ({', '.join(found)}): continue "
                              "it with --resume, or replace it with --overwrite, or choose "
                              "another --out")
    if os.path.isdir(config.out):
        checkpoint.remove_stale_temp_files(config.out)
    run = Run(config, cuda_graph=cuda_graph)
    if state is not None:
        run.load_state(state, path)
        print(resume_note(run))
    try:
        return run.fit(progress=progress, on_epoch_end=on_epoch_end)
    except KeyboardInterrupt as e:
        raise RunInterrupted(f"interrupted at iteration {run.iteration}; {run.where_saved()}"
                             + ("; continue with --resume" if run.saved_iteration else "")) from e


def saved_config(folder):
    """The config (a dict) of the run whose checkpoint is in folder."""
    return checkpoint.load_run_config(os.path.join(folder, CHECKPOINT))
