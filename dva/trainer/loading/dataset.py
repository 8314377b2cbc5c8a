"""A split of a feature store as tensors, and a PyTorch Dataset of windows over it, for a training loop of one's own.

Nothing here is a second copy of the trainer: `read_split` is the load `dva fit` and `dva predict` make
(`store.choose_sets`, `store.load_split`); `WindowDataset` cuts a split into the windows the trainer trains on
(`window_index`), gathers them (`gather`), normalises them (`evaluate.normalise_batch`) and stitches per-window
predictions back to per-frame ones as `evaluate.predict_frames` does (`FrameStitcher`, `evaluate.stitch_weights`);
`score` is `evaluate.evaluate`, the figures `dva fit` reports. `dva.trainer.results.write.write_submission` turns
per-frame predictions of a test split read here into the challenge's file.

    >>> import dva, torch
    >>> train, val = dva.read_split("stores", "train"), dva.read_split("stores", "val")
    >>> normaliser = dva.Normaliser.fit(train)  # on train only, as dva fit does; then the same for every split
    >>> loader = torch.utils.data.DataLoader(dva.WindowDataset(train, normaliser=normaliser), batch_size=16, shuffle=True)
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from dva.errors import ConfigError, DvaWarning
from dva.trainer.loading.store import choose_sets, left_out_message, load_split
from dva.trainer.loading.windows import FrameStitcher, Normaliser, SplitData, gather, window_index

LABELLED = ("train", "val")  # the splits a task puts its labelled tracks in (wherever the store holds them)


def read_split(store, split: str = "train", task: str = "va", modalities="visual,audio", visual_features: str | None = None,
               audio_features: str | None = None, audio_align: str = "nearest") -> SplitData:
    """A whole split of a store as CPU tensors (`SplitData`: every track concatenated along time, with per-track
    offsets), read as the trainer reads it. store: a path or URL, or an open `dva.Store`.

    task va|expr|au|mtl decides the tracks and the labels, as `dva fit` and `dva predict` take them: train and val are
    the task's own splits (the tracks its annotations put there, wherever stored), with its labels (float32, NaN where
    not annotated: VA [N, 2], EXPR the class index [N, 1], AU the 12 bits [N, 12], MTL the three side by side [N, 15]);
    any other split (test, or all of a folder of videos) is unlabelled: VA's are the tracks stored under it, EXPR's and
    AU's their challenge's test tracks, MTL's every track any of the three puts there (as `dva predict --format csv`
    takes them; labels VA's, [N, 2], NaN). modalities and the feature sets are `dva fit`'s flags (a set given
    by name, else the store's only one of that modality). A DvaWarning names every track left out (failed or
    incomplete); `data.source` records the store, split, task and sets, which `dva.write_submission` reads.

    >>> val = dva.read_split("stores", "val")                 # VA's val: every frame of its tracks
    >>> val.visual.shape, val.labels.shape, val.offsets[:3]   # [N, Dv] float16, [N, 2], where each track starts
    >>> expr_test = dva.read_split("stores", "test", task="expr")  # EXPR's test tracks, unlabelled
    """
    from dva.trainer.settings import MODALITIES, check_choice

    chosen = tuple(m.strip() for m in (modalities.split(",") if isinstance(modalities, str) else modalities) if m.strip())
    if not chosen or any(m not in MODALITIES for m in chosen):
        raise ConfigError(f"modalities must be visual, audio or visual,audio, not {modalities!r}")
    check_choice("task", task)
    check_choice("audio_align", audio_align)
    with _opened(store) as opened:
        path = str(opened.path)
        sets = choose_sets(opened.feature_sets(), visual_features, audio_features, chosen, path)
        data = load_split(opened, split, sets, audio_align, task=_load_task(task, split))
    data.source = {"store": path, "split": split, "task": task, "sets": sets, "audio_align": audio_align, "modalities": list(chosen)}
    message = left_out_message(data)
    if message:
        warnings.warn(DvaWarning(message), stacklevel=2)
    return data


def _load_task(task: str, split: str):
    """`load_split`'s task for a split: the task itself for its labelled splits (`dva fit`'s load) and EXPR's and AU's
    test; VA's other splits as stored (`dva predict`'s load); MTL's other splits every track any of its tasks puts
    there (`predict_tracks`), unlabelled."""
    from dva.data.tasks import MTL_TASKS

    if split in LABELLED or task in ("expr", "au"):
        return task
    return MTL_TASKS if task == "mtl" else None


@contextlib.contextmanager
def _opened(store):
    """An open store: store itself when it is one (left open), else the path opened read-only and closed after."""
    from dva.stores import Store, open_store

    if isinstance(store, Store):
        yield store
        return
    opened = open_store(store, "r")
    try:
        yield opened
    finally:
        opened.close()


class WindowDataset(torch.utils.data.Dataset):
    """The windows `dva fit` trains on over a split: windows of seq_len frames every stride frames along each track,
    the last one aligned to the track's end, a track shorter than seq_len padded (`window_index`). Item i is one window,
    a dict of tensors: visual float32 [L, Dv], visual_mask bool [L], audio float32 [L, Da] (aligned to frames as the
    trainer aligns it, `read_split`'s audio_align), audio_mask [L], labels float32 [L, C] (`read_split`; NaN where not
    annotated), label_mask [L] (annotated and in the track), frames int64 [L] (the window's global frame indices),
    inside bool [L] (in the track, not padding) and window (i itself, to put a shuffled batch's predictions back).
    Masks are false past a track's end. normaliser: `dva.Normaliser.fit(train)`, fitted on the train split only (as
    `dva fit` does) and given to every split's dataset; features at masked frames are then exactly 0.

    Works with a torch DataLoader and its default collate (a batch of B windows: [B, L, ...]); a batch is gathered at
    once (`__getitems__`). `to_frames` turns per-window predictions into per-frame ones for `dva.score` and
    `dva.write_submission`.

    >>> data = dva.WindowDataset(train, seq_len=64, stride=32, normaliser=dva.Normaliser.fit(train))
    >>> batch = next(iter(torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)))
    >>> batch["visual"].shape, batch["labels"].shape, batch["label_mask"].shape  # [8, 64, Dv], [8, 64, 2], [8, 64]
    """

    def __init__(self, data: SplitData, seq_len: int = 64, stride: int = 32, normaliser: Normaliser | None = None):
        from dva.trainer.evaluate import normaliser_on

        self.data, self.seq_len, self.stride = data, int(seq_len), int(stride)
        self.index, self.inside = window_index(data.offsets, self.seq_len, self.stride)
        self.normaliser = None if normaliser is None else normaliser_on(normaliser, data.visual.device)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.batch([i]).items()}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.batch(indices)
        return [{name: value[k] for name, value in batch.items()} for k in range(len(indices))]

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """These windows as one batch, every item's tensor stacked ([B, L, ...]), by one gather.

        >>> data.batch([0, 1])["visual"].shape  # [2, 64, Dv]
        """
        from dva.trainer.evaluate import normalise_batch

        windows = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if windows.numel() and not (-len(self) <= int(windows.min()) and int(windows.max()) < len(self)):
            raise IndexError(f"window index out of range: this dataset has {len(self)} windows")
        windows = windows % max(len(self), 1)
        device = self.data.visual.device  # every tensor of the batch on the device the split is on
        index, inside = self.index[windows].to(device), self.inside[windows].to(device)
        batch = gather(self.data, index, inside)
        if self.normaliser is not None:
            batch = normalise_batch(batch, self.normaliser)
            del batch["visual_stored"]  # the features as stored: only dva's own --prompt-input visual reads them
        return {**batch, "frames": index, "inside": inside, "window": windows.to(device)}

    def to_frames(self, pred, windows=None, stitch: str = "hann") -> np.ndarray:
        """Per-frame predictions float32 [N, C] of the whole split from per-window ones pred [W, L, C] (W: every window in
        order, or those named by windows, e.g. the `window` of each batch concatenated): where windows overlap, their
        weighted mean (stitch hann: more weight at a window's centre, or mean), as `dva fit` and `dva predict` stitch; a
        frame no given window covers is 0.

        >>> pred = torch.cat([model(b).detach() for b in torch.utils.data.DataLoader(data, batch_size=32)])
        >>> frames = data.to_frames(pred)  # [val.n_frames, 2]: for dva.score(frames, val)
        """
        from dva.trainer.evaluate import stitch_weights

        pred = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).detach().float().cpu()
        windows = torch.arange(len(self)) if windows is None else torch.as_tensor(windows, dtype=torch.int64).reshape(-1).cpu()
        if pred.ndim != 3 or pred.shape[:2] != (windows.shape[0], self.seq_len):
            raise ConfigError(f"to_frames takes predictions [windows, seq_len, C] = [{windows.shape[0]}, {self.seq_len}, C], not {list(pred.shape)}")
        stitched = FrameStitcher(self.data.n_frames, int(pred.shape[2]), stitch_weights(stitch, self.seq_len))
        stitched.add(self.index[windows], self.inside[windows], pred)
        return stitched.frames()


def score(pred, data: SplitData, thresholds=None) -> dict:
    """The figures of per-frame predictions pred [N, C] (numpy or torch; N = data.n_frames) against data's labels, as
    `dva fit` reports them (`evaluate.evaluate`), as plain floats and dicts: VA ccc_v, ccc_a, p_va; EXPR (pred the 8
    class probabilities or scores) expr_f1 and expr_f1_per_class; AU (pred the 12 probabilities, each at its threshold:
    `unit_thresholds`, None: 0.5) au_f1 and au_f1_per_au; MTL (pred [N, 22]) p_mtl and its parts; and per_track, each track's.

    >>> figures = dva.score(val_frames, val)  # val_frames: [val.n_frames, 2], e.g. WindowDataset.to_frames
    >>> figures["p_va"], figures["ccc_v"], figures["per_track"]["video1"]["ccc_a"]
    """
    from dva.data.tasks import task_of
    from dva.trainer.evaluate import evaluate
    from dva.trainer.model.heads import TASK_WIDTH

    values = (pred.detach().float().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred, dtype=np.float32))
    task = task_of(data.labels)
    if values.ndim != 2 or values.shape != (data.n_frames, TASK_WIDTH[task]):
        raise ConfigError(f"score takes {task}'s per-frame predictions [{data.n_frames}, {TASK_WIDTH[task]}] of the split, not {list(values.shape)}")
    return plain(evaluate(values, data, unit_thresholds(thresholds)))


def unit_thresholds(thresholds) -> list[float] | None:
    """AU's 12 per-unit thresholds from one value for every unit, 12 values, or {AU name: value} (metrics.json's
    "thresholds"); None stays None (0.5). ConfigError for anything else."""
    from dva.data.tasks import AU_NAMES

    if thresholds is None:
        return None
    try:
        values = [thresholds[name] for name in AU_NAMES] if isinstance(thresholds, dict) else thresholds
        return [float(t) for t in np.broadcast_to(np.asarray(values, dtype=np.float64), (len(AU_NAMES),))]
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"thresholds: one value, {len(AU_NAMES)} (one per AU, {', '.join(AU_NAMES)}) or {{AU: value}}, not {thresholds!r}") from None


def plain(value):
    """value with numpy numbers, arrays and tuples as Python floats, ints and lists (json.dumps takes it)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value
