"""What a run leaves to read: metrics as CSV, and the training curves as in He et al. 2015,
Fig. 6 (training error, thin, and test error, bold, against iterations). Lesson 9 reads them.
"""

import csv
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
