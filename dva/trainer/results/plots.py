"""The PNGs a researcher looks at after a run: curves, VA traces, and the VA plane with the 3x3 grid; a recording's
tasks over time."""

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


def plot_track(path: Path, track: str, time: np.ndarray, panels: dict[str, np.ndarray], face: np.ndarray | None) -> Path:
    """<track>.png: a panel per task over time (seconds), one above the other in va, expr, au order, stretches without a
    face shaded in each: valence and arousal; EXPR's eight class probabilities stacked, the most probable class as a
    strip above them; AU's twelve probabilities as a heat map. time float [T]; panels {task: [T, 2 | 8 | 12]}; face
    bool [T] or None (the model read no faces: nothing shaded). VA alone: one panel, 12 x 3.5 inches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = {"va": 3.5, "expr": 3.2, "au": 3.2}
    tasks = [task for task in heights if task in panels]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(12, sum(heights[t] for t in tasks)), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [heights[t] for t in tasks]})
    step = float(np.median(np.diff(time))) if len(time) > 1 else 0.04
    span = (float(time[0]) if len(time) else 0, float(time[-1]) + step if len(time) else 1)
    for ax, task in zip(axes[:, 0], tasks):
        for i, (start, stop) in enumerate(_runs(~face) if face is not None else []):  # over EXPR's areas and AU's map, under VA's lines
            ax.axvspan(time[start], time[stop - 1] + step, color="grey", alpha=0.25 if task == "va" else 0.5, linewidth=0,
                       zorder=1 if task == "va" else 3, label=None if i else "no face")
        {"va": _va_panel, "expr": _expr_panel, "au": _au_panel}[task](ax, time, panels[task], step)
        ax.set(xlim=span)
        if task == "va":
            ax.legend(loc="upper right", ncol=3)
        elif task == "expr":  # beside the panel: inside it would hide the areas (tight_layout narrows every panel alike)
            ax.legend(loc="center left", bbox_to_anchor=(1.005, 0.5), fontsize="small", frameon=False)
    axes[0, 0].set(title=track)
    axes[-1, 0].set(xlabel="time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _va_panel(ax, time: np.ndarray, pred: np.ndarray, step: float) -> None:
    ax.plot(time, pred[:, 0], color="tab:blue", linewidth=1, label="valence")
    ax.plot(time, pred[:, 1], color="tab:red", linewidth=1, label="arousal")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(ylim=(-1.05, 1.05))


def _expr_panel(ax, time: np.ndarray, probabilities: np.ndarray, step: float) -> None:
    """The class probabilities stacked (they sum to 1), and above them a strip coloured by the most probable class."""
    from dva.data.tasks import EXPR_CLASSES

    colours = [f"C{k}" for k in range(len(EXPR_CLASSES))]
    ax.stackplot(time, probabilities.T, colors=colours, labels=EXPR_CLASSES, linewidth=0)
    top = np.argmax(probabilities, axis=1)
    for k, colour in enumerate(colours):  # each frame's stretch as wide as a frame, as the no-face spans
        ax.broken_barh([(time[a], time[b - 1] + step - time[a]) for a, b in _runs(top == k)], (1.03, 0.09), color=colour, linewidth=0)
    ax.set(ylim=(0, 1.12), ylabel="expression")
    ax.set_yticks([0, 0.5, 1, 1.075], ["0", "0.5", "1", "argmax"])


def _au_panel(ax, time: np.ndarray, probabilities: np.ndarray, step: float) -> None:
    """The twelve units' probabilities as a heat map, one row per unit (AU1 at the top)."""
    from dva.data.tasks import AU_NAMES

    start, stop = (float(time[0]), float(time[-1]) + step) if len(time) else (0.0, 1.0)
    image = ax.imshow(probabilities.T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                      extent=(start, stop, len(AU_NAMES) - 0.5, -0.5))
    ax.set_yticks(range(len(AU_NAMES)), AU_NAMES, fontsize="small")
    ax.figure.colorbar(image, cax=ax.inset_axes((1.005, 0, 0.008, 1)), label="probability")  # beside the panel, not taking its width


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each stretch of True in flags [T]."""
    padded = np.concatenate([[False], np.asarray(flags, bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
