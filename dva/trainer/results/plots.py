"""The PNGs a researcher looks at after a run: curves, VA traces, and the VA plane with the 3x3 grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dva.trainer.loading.windows import SplitData


def plot_run(out: Path, history: list[dict], val: SplitData | None, val_pred: np.ndarray | None, n_traces: int = 3) -> list[Path]:
    """curves.png, and with held-out tracks (val) traces.png and va_plane.png."""
    import matplotlib

    matplotlib.use("Agg")
    paths = [plot_curves(out / "curves.png", history)]
    if val is not None:
        paths += [plot_traces(out / "traces.png", val, val_pred, n_traces), plot_va_plane(out / "va_plane.png", val, val_pred)]
    return paths


def plot_curves(path: Path, history: list[dict]) -> Path:
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [row["loss"] for row in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    if all("p_va" in row for row in history):
        for key, label in (("ccc_v", "CCC valence"), ("ccc_a", "CCC arousal"), ("p_va", "P_VA")):
            right.plot(epochs, [row[key] for row in history], marker="o", label=label)
        right.set(xlabel="epoch", ylabel="held out", title="held-out tracks (all frames concatenated)")
        right.legend()
    else:  # nothing held out: the learning rate the schedule gave each epoch
        right.plot(epochs, [row["lr"] for row in history], marker="o")
        right.set(xlabel="epoch", ylabel="learning rate", title="learning rate (nothing held out)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_traces(path: Path, val: SplitData, pred: np.ndarray, n_traces: int) -> Path:
    import matplotlib.pyplot as plt

    lengths = np.diff(val.offsets)
    chosen = list(np.argsort(-lengths)[:n_traces])
    fig, axes = plt.subplots(len(chosen), 2, figsize=(12, 2.6 * len(chosen)), squeeze=False)
    labels = val.labels.cpu().numpy()
    for row, index in enumerate(chosen):
        part = val.track_slice(int(index))
        for col, name in enumerate(("valence", "arousal")):
            ax = axes[row, col]
            ax.plot(labels[part, col], label="true", color="black", linewidth=1)
            ax.plot(pred[part, col], label="predicted", color="tab:red", linewidth=1)
            ax.set(ylim=(-1.05, 1.05), title=f"{val.tracks[index]}: {name}", xlabel="frame")
            if row == 0 and col == 0:
                ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_va_plane(path: Path, val: SplitData, pred: np.ndarray, max_points: int = 4000) -> Path:
    import matplotlib.pyplot as plt

    labels = val.labels.cpu().numpy()
    valid = np.flatnonzero(val.label_mask.cpu().numpy())
    if valid.size > max_points:
        valid = valid[np.linspace(0, valid.size - 1, max_points).astype(int)]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(labels[valid, 0], labels[valid, 1], s=3, alpha=0.3, label="true", color="black")
    ax.scatter(pred[valid, 0], pred[valid, 1], s=3, alpha=0.3, label="predicted", color="tab:red")
    for edge in (-1 / 3, 1 / 3):  # the 3x3 grid of prompt regions
        ax.axvline(edge, color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(edge, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="valence", ylabel="arousal", title="val frames on the VA plane")
    ax.legend(loc="lower right", markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_va_track(path: Path, track: str, time: np.ndarray, pred: np.ndarray, face: np.ndarray | None) -> Path:
    """<track>.png: valence and arousal over time (seconds), stretches without a face shaded. time float [T],
    pred [T, 2], face bool [T] or None (the model read no faces: nothing shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.5))
    step = float(np.median(np.diff(time))) if len(time) > 1 else 0.04
    for i, (start, stop) in enumerate(_runs(~face) if face is not None else []):
        ax.axvspan(time[start], time[stop - 1] + step, color="grey", alpha=0.25, linewidth=0, label=None if i else "no face")
    ax.plot(time, pred[:, 0], color="tab:blue", linewidth=1, label="valence")
    ax.plot(time, pred[:, 1], color="tab:red", linewidth=1, label="arousal")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(ylim=(-1.05, 1.05), xlim=(float(time[0]) if len(time) else 0, float(time[-1]) + step if len(time) else 1), xlabel="time (s)", title=track)
    ax.legend(loc="upper right", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each stretch of True in flags [T]."""
    padded = np.concatenate([[False], np.asarray(flags, bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
