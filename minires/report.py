"""What a run leaves to read: metrics as CSV, and the training curves as in He et al. 2015,
Fig. 6 (training error, thin, and test error, bold, against iterations), titled with the recipe.
Lesson 9 reads them. Also the line a resumed run prints.
"""

import csv
import math
import os

import numpy as np


def write_metrics(folder, history, steps):
    """metrics.csv (one row per epoch) and steps.csv (one row per iteration) in folder."""
    for name, rows in [("metrics.csv", history), ("steps.csv", steps)]:
        with open(os.path.join(folder, name), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def smooth(values, window):
    """Mean of each value with the up to window-1 values before it (a trailing moving average)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def resume_note(run):
    """One line that says where a resumed run continues and, for an extension, what its learning
    rate does past the original end."""
    note = f"resuming {run.config.out} at iteration {run.iteration} of {run.total_iters}"
    if run.config.schedule_iters:
        drops = " and ".join(str(m) for m in run.schedule.milestones)
        last = run.schedule.base_lr * run.schedule.gamma ** len(run.schedule.milestones)
        note += (f" (extending the original {run.config.schedule_iters}: the learning rate keeps "
                 f"its drops at iterations {drops} and trains on at {last:g})")
    return note


def recipe(config, iterations, warmup=False):
    """The run in two lines, for the plot's title: model and data, then the learning rate."""
    first = f"{config.model}, shortcut {config.shortcut}, batch {config.batch}, seed {config.seed}"
    first += ", 45k/5k split" if config.val else ""
    second = f"SGD lr {config.lr:g}, {config.schedule} schedule"
    second += ", warm-up" if warmup else ""
    return f"{first}\n{second}, {iterations:,} iterations"


def lr_changes(steps):
    """(iteration, new rate) wherever the learning rate of steps changes: the paper's drops (and
    the end of a warm-up). A schedule that changes the rate at every step has no steps to mark."""
    changes = [(step["iteration"], step["lr"]) for before, step in zip(steps, steps[1:])
               if not math.isclose(step["lr"], before["lr"])]
    return changes if len(changes) <= 10 else []


def plot_curves(history, steps, path, title):
    """Training error (thin: per iteration, smoothed over ~an epoch's tenth) and test error
    (bold: per epoch) against iterations, as in the paper's Fig. 6; a dashed line where the
    learning rate changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.4))
    window = max(1, history[0]["iteration"] // 10)
    ax.plot([s["iteration"] for s in steps], 100 * smooth([s["error"] for s in steps], window),
            "-", lw=1, label="train error" + (f" (mean of {window} iterations)"
                                              if window > 1 else ""))
    ax.plot([h["iteration"] for h in history], [100 * h["test_error"] for h in history], "-o",
            lw=2, label="test error")
    for iteration, lr in lr_changes(steps):
        ax.axvline(iteration, color="gray", ls="--", lw=0.8)
        ax.text(iteration, 0.02, f" lr {lr:g}", transform=ax.get_xaxis_transform(), rotation=90,
                va="bottom", ha="right", fontsize=8, color="gray")
    ax.set(xlabel="iterations", ylabel="error (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Title": title.replace("\n", "; ")})
    plt.close(fig)
    return path
