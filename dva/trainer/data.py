"""Features from the store as contiguous tensors on the training device, and windows as index gathers.

A split is held as one tensor per array, all tracks concatenated, plus per-track offsets.
A window is a row of global frame indices; a batch is `tensor[indices]`, no per-sample Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from dva.errors import ConfigError, StoreError

AUDIO_ALIGNS = ("nearest", "linear")
CHUNK = 65536  # rows per step when normalising, to bound temporary memory


@dataclass
class SplitData:
    """One split, every track concatenated along time (N frames in all)."""

    split: str
    tracks: list[str]
    offsets: np.ndarray  # int64 [n_tracks + 1]
    visual: torch.Tensor  # float16 [N, Dv] (as stored: Aff-Wild2's 2.8M frames stay within one GPU)
    visual_mask: torch.Tensor  # bool [N]
    audio: torch.Tensor  # float16 [N, Da], aligned to frame times
    audio_mask: torch.Tensor  # bool [N]
    labels: torch.Tensor  # float32 [N, 2], NaN where invalid or unlabelled
    label_mask: torch.Tensor  # bool [N]
    attrs: list[dict]  # per-track store attrs
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)  # track -> why it is not here (failed: ..., incomplete)

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    def to(self, device) -> "SplitData":
        for name in ("visual", "visual_mask", "audio", "audio_mask", "labels", "label_mask"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def track_slice(self, index: int) -> slice:
        return slice(int(self.offsets[index]), int(self.offsets[index + 1]))


def align_audio(audio: np.ndarray, audio_time: np.ndarray, frame_time: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Audio rows [K, Da] at audio_time -> [T, Da] at frame_time, and a mask of frames that have sound.

    Frames before the first or after the last audio step by more than one step are masked.
    """
    if how not in AUDIO_ALIGNS:
        raise ConfigError(f"--audio-align must be one of {', '.join(AUDIO_ALIGNS)}, not {how!r}")
    frames = frame_time.shape[0]
    if audio.shape[0] == 0:
        return np.zeros((frames, audio.shape[1]), dtype=np.float32), np.zeros(frames, dtype=bool)
    audio = audio.astype(np.float32)
    step = float(np.median(np.diff(audio_time))) if audio_time.shape[0] > 1 else 1.0
    mask = (frame_time >= audio_time[0] - step) & (frame_time <= audio_time[-1] + step)
    right = np.clip(np.searchsorted(audio_time, frame_time), 0, audio.shape[0] - 1)
    left = np.clip(right - 1, 0, audio.shape[0] - 1)
    if how == "nearest":
        pick = np.where(np.abs(audio_time[left] - frame_time) <= np.abs(audio_time[right] - frame_time), left, right)
        return audio[pick], mask
    span = audio_time[right] - audio_time[left]
    weight = np.where(span > 0, (frame_time - audio_time[left]) / np.where(span > 0, span, 1), 0.0).clip(0, 1)
    return (1 - weight)[:, None] * audio[left] + weight[:, None] * audio[right], mask


def choose_sets(available: dict[str, dict], visual: str | None, audio: str | None, modalities, store_path: str) -> dict[str, list[str]]:
    """The feature sets to train on, per modality: the names given (comma-separated), or the store's only set of
    that modality; none for a modality the model does not use. One-line errors name what the store has."""
    chosen = {}
    for modality, given in (("visual", visual), ("audio", audio)):
        have = [name for name, info in available.items() if info.get("modality") == modality]
        if given:
            names = [n.strip() for n in str(given).replace("+", ",").split(",") if n.strip()]
            for name in names:
                if name not in have:
                    where = f"its {modality} sets are {', '.join(have)}" if have else f"it has no {modality} set"
                    raise ConfigError(f"--{modality}-features {name}: {store_path} has no such {modality} feature set ({where})")
            chosen[modality] = names
        elif modality not in modalities:
            chosen[modality] = []
        elif len(have) == 1:
            chosen[modality] = have
        elif not have:
            raise ConfigError(f"{store_path} has no {modality} feature set: extract one (dva extract --only {modality}), import one (dva import), or train with --modalities {'audio' if modality == 'visual' else 'visual'}")
        else:
            raise ConfigError(f"{store_path} has {len(have)} {modality} feature sets ({', '.join(have)}): choose with --{modality}-features NAME[,NAME]")
    return chosen


def load_split(store, split: str, sets: dict[str, list[str]], audio_align: str = "nearest", tracks: list[str] | None = None) -> SplitData:
    """Read every track of split whose chosen feature sets (sets: modality -> names, see `choose_sets`) are
    complete (or only these tracks) from an open store into CPU tensors. Several sets of one modality are
    concatenated along features (normalisation is per feature, so each keeps its own); a frame is valid for a
    modality when every one of its sets has it. The tracks left out are named in `SplitData.left_out`."""
    from dva.stores import why_not_usable

    if split not in store.splits():
        raise StoreError(f"{store.path} has no {split!r} split: run `dva extract --split {split}` into it first")
    index = store.track_index(split)  # one listing: the cost per track stays flat at any store size
    wanted = list(index) if tracks is None else [t for t in tracks if t in index]
    needed = [*sets["visual"], *sets["audio"]]
    reasons = {t: why_not_usable(index[t], needed) for t in wanted}
    names = [t for t in wanted if reasons[t] is None]
    left_out = {t: reason for t, reason in reasons.items() if reason is not None}
    if not names:
        raise StoreError(f"{store.path}: no track of split {split!r} has {', '.join(needed) or 'any feature set'} complete: run `dva extract --split {split}`")
    available = store.feature_sets()
    dims = {name: int(available[name]["dim"]) for name in needed}
    parts: dict[str, list] = {k: [] for k in ("visual", "visual_mask", "audio", "audio_mask", "labels")}
    attrs = []
    for name in names:
        frame_time = store.read(split, name, "frame_time")
        frames = frame_time.shape[0]
        for modality in ("visual", "audio"):
            columns, mask = [], np.ones(frames, dtype=bool) if sets[modality] else np.zeros(frames, dtype=bool)
            for set_name in sets[modality]:
                arrays = store.read_set(split, name, set_name, modality)
                if modality == "visual":
                    values, valid = arrays["data"], arrays["mask"].astype(bool)
                else:
                    values, valid = align_audio(arrays["data"].reshape(-1, dims[set_name]), arrays["time"], frame_time, audio_align)
                columns.append(values.astype(np.float16, copy=False))
                mask &= valid
            parts[modality].append(np.concatenate(columns, axis=1) if columns else np.zeros((frames, 0), np.float16))
            parts[f"{modality}_mask"].append(mask)
        labels = store.read(split, name, "labels") if index[name].get("labelled") else None
        parts["labels"].append(labels.astype(np.float32) if labels is not None else np.full((frames, 2), np.nan, np.float32))
        attrs.append(index[name])
    lengths = [v.shape[0] for v in parts["labels"]]
    labels = torch.from_numpy(np.concatenate(parts["labels"]))
    return SplitData(
        split=split,
        tracks=names,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        visual=torch.from_numpy(np.concatenate(parts["visual"])),
        visual_mask=torch.from_numpy(np.concatenate(parts["visual_mask"])),
        audio=torch.from_numpy(np.concatenate(parts["audio"])),
        audio_mask=torch.from_numpy(np.concatenate(parts["audio_mask"])),
        labels=labels,
        label_mask=~torch.isnan(labels).any(dim=1),
        attrs=attrs,
        left_out=left_out,
    )


def left_out_message(*splits: SplitData) -> str | None:
    """One line naming every track of these splits that is not loaded (failed or incomplete), with counts;
    None when nothing is left out. Figures on a split with left-out tracks cover only the others."""
    parts = []
    for data in splits:
        if not data.left_out:
            continue
        failed = sum(reason.startswith("failed") for reason in data.left_out.values())
        named = "; ".join(f"{track} ({reason})" for track, reason in data.left_out.items())
        parts.append(
            f"{data.split}: {len(data.left_out)} of {len(data.tracks) + len(data.left_out)} tracks left out "
            f"({failed} failed, {len(data.left_out) - failed} incomplete; figures cover the other {len(data.tracks)}): {named}"
        )
    return " | ".join(parts) or None


@dataclass
class Normaliser:
    """Per-feature mean/std from the train split's valid rows; applied to every split."""

    visual_mean: torch.Tensor
    visual_std: torch.Tensor
    audio_mean: torch.Tensor
    audio_std: torch.Tensor

    @classmethod
    def fit(cls, data: SplitData) -> "Normaliser":
        def stats(values, mask):
            """Mean and std over the valid rows, accumulated in float64 chunks (no float32 copy of the split), on
            the device the features are on; the result is on the CPU."""
            total = torch.zeros(values.shape[1], dtype=torch.float64, device=values.device)
            squares, count = torch.zeros_like(total), 0
            for start in range(0, values.shape[0], CHUNK):
                rows = values[start : start + CHUNK][mask[start : start + CHUNK]].double()
                total, squares, count = total + rows.sum(0), squares + (rows * rows).sum(0), count + rows.shape[0]
            if count < 2:
                return torch.zeros(values.shape[1]), torch.ones(values.shape[1])
            mean = total / count
            return mean.float().cpu(), (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-4).float().cpu()

        visual_mean, visual_std = stats(data.visual, data.visual_mask)
        audio_mean, audio_std = stats(data.audio, data.audio_mask)
        return cls(visual_mean, visual_std, audio_mean, audio_std)

    def apply(self, data: SplitData) -> SplitData:
        """A normalised float16 copy of data (the input is left as it was); masked rows become exactly zero."""

        def normalise(values, mask, mean, std):
            out = torch.empty(values.shape, dtype=torch.float16)
            for start in range(0, values.shape[0], CHUNK):
                part = slice(start, start + CHUNK)
                out[part] = ((values[part].float() - mean) / std * mask[part, None]).half()
            return out

        return dataclasses.replace(
            data,
            visual=normalise(data.visual, data.visual_mask, self.visual_mean, self.visual_std),
            audio=normalise(data.audio, data.audio_mask, self.audio_mean, self.audio_std),
        )

    @classmethod
    def from_state(cls, state: dict) -> "Normaliser":
        return cls(**state)

    def state(self) -> dict:
        return {k: v.cpu() for k, v in vars(self).items()}


def window_index(offsets: np.ndarray, seq_len: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows over every track: (global frame indices int64 [W, seq_len], in-track mask bool [W, seq_len]).

    Windows start every `stride` frames; the last one is aligned to the track's end so every
    frame is covered; a track shorter than seq_len gets one window padded past its end
    (padding indices repeat the last frame and are masked).
    """
    if seq_len < 1 or stride < 1:
        raise ConfigError("--seq-len and --stride must be at least 1")
    starts, ends = [], []
    for begin, end in zip(offsets[:-1], offsets[1:]):
        length = int(end - begin)
        if length == 0:
            continue
        track_starts = list(range(0, max(length - seq_len, 0) + 1, stride))
        if track_starts[-1] + seq_len < length:
            track_starts.append(length - seq_len)
        starts += [begin + s for s in track_starts]
        ends += [end] * len(track_starts)
    starts_t = torch.tensor(starts, dtype=torch.int64)[:, None]
    ends_t = torch.tensor(ends, dtype=torch.int64)[:, None]
    index = starts_t + torch.arange(seq_len)[None, :]
    inside = index < ends_t
    return torch.minimum(index, ends_t - 1), inside


def gather(data: SplitData, index: torch.Tensor, inside: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch from window indices: every array as [B, L, ...]; masks also false outside the track."""
    return {
        "visual": data.visual[index].float(),
        "visual_mask": data.visual_mask[index] & inside,
        "audio": data.audio[index].float(),
        "audio_mask": data.audio_mask[index] & inside,
        "labels": data.labels[index],
        "label_mask": data.label_mask[index] & inside,
    }
