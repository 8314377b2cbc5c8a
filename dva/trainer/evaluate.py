"""What `dva fit` and `dva predict` share: building the model, per-frame prediction, evaluation.

fit -> evaluate and predict -> run_dir -> evaluate; nothing here imports either of them.
"""

from __future__ import annotations

import numpy as np
import torch

from dva.data.tasks import MTL_WIDTH, task_of
from dva.errors import ConfigError
from dva.metrics import ccc, p_va
from dva.trainer.loading.windows import FrameStitcher, Normaliser, SplitData, gather, past_windows, window_index
from dva.trainer.settings import SMOOTH_CHOICES, STITCHES, FitSettings


def resolve_device(requested: str | None) -> torch.device:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: no CUDA device here; use --device cpu")
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def clip_text_towers(available: dict, sets: dict) -> list[dict]:
    """The store's CLIP sets as text towers for the prompt head, the chosen visual sets first."""
    from dva.pipeline.encoders.naming import is_clip

    clip_sets = [name for name in sets["visual"] if is_clip(available[name].get("encoder") or {})]
    clip_sets += [name for name, info in available.items() if info.get("modality") == "visual" and is_clip(info.get("encoder") or {}) and name not in clip_sets]
    return [{"model": available[n]["encoder"]["model"], "pretrained": available[n]["encoder"].get("pretrained"), "from_set": n} for n in clip_sets]


def text_tower_for(settings: FitSettings, provenance: dict) -> dict | None:
    """{"model", "pretrained"} of the CLIP whose text tower the prompt head uses: --text-tower MODEL/PRETRAINED, else the
    one a checkpoint recorded, else the store's CLIP set (the chosen visual one first); None with --prompt none."""
    if settings.prompt == "none":
        return None
    if settings.text_tower:
        model, _, pretrained = str(settings.text_tower).partition("/")
        return {"model": model, "pretrained": pretrained or None}
    if provenance.get("text_tower"):
        return provenance["text_tower"]
    if provenance.get("text_towers"):
        return provenance["text_towers"][0]
    raise ConfigError("the prompt head needs a CLIP text tower and the store has no CLIP feature set: pass --text-tower MODEL/PRETRAINED (e.g. ViT-B-32/openai) or --prompt none")


def build_model(settings: FitSettings, provenance: dict, visual_dim: int, audio_dim: int, device):
    """The model for these settings; the prompt head gets the frozen CLIP text tower `text_tower_for` names."""
    from dva.trainer.model.compose import ModelSettings, VAModel

    clip_model = None
    if settings.prompt != "none":
        from dva.pipeline.encoders.clip import load_clip

        tower = text_tower_for(settings, provenance)
        clip_model = load_clip(tower["model"], tower.get("pretrained"), device=str(device))
    return VAModel(ModelSettings.of(settings), visual_dim, audio_dim, clip_model=clip_model).to(device)


def model_inputs(settings: FitSettings, batch: dict) -> dict:
    chosen = settings.modality_list
    inputs = {
        "visual": batch["visual"] if "visual" in chosen else None,
        "audio": batch["audio"] if "audio" in chosen else None,
        "visual_mask": batch["visual_mask"],
        "audio_mask": batch["audio_mask"],
    }
    if settings.prompt_input == "visual":
        inputs["prompt_visual"] = batch["visual_stored"]
    return inputs


def gather_windows(data: SplitData, index: torch.Tensor, inside: torch.Tensor, target: torch.Tensor | None) -> dict:
    """`gather`, and with target (the target frame of each window, --target last) the labels of the target frames
    alone, [B, 1, C]."""
    batch = gather(data, index, inside)
    if target is not None:
        batch["labels"], batch["label_mask"] = data.labels[target][:, None], data.label_mask[target][:, None]
    return batch


def eval_windows(settings: FitSettings, data: SplitData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The windows a prediction of every frame of data runs: (index [W, L], inside [W, L], target [W] or None) on
    data's device. --target last: one past window ending at every frame (`past_windows`); otherwise windows every
    seq_len / 2 frames, stitched."""
    device = data.visual.device
    if settings.target == "last":
        index, target = past_windows(data, settings.window_seconds, settings.window_frames, None, "visual" in settings.modality_list)
        return index.to(device), torch.ones_like(index, dtype=torch.bool, device=device), target.to(device)
    index, inside = window_index(data.offsets, settings.seq_len, max(1, settings.seq_len // 2))
    return index.to(device), inside.to(device), None


def stitch_weights(how: str, seq_len: int) -> torch.Tensor:
    """float32 [seq_len]: the weight of each window position when overlapping windows are averaged.

    mean: all 1. hann: sin^2(pi (i + 1/2) / seq_len), highest at the window's centre (where the GRU
    has seen the most context) and small but never zero at its ends, so a track's first and last
    frames, which only a window's end covers, still get a prediction."""
    if how not in STITCHES:
        raise ConfigError(f"--stitch must be one of {', '.join(STITCHES)}, not {how!r}")
    if how == "mean":
        return torch.ones(seq_len)
    return torch.sin(torch.pi * (torch.arange(seq_len, dtype=torch.float64) + 0.5) / seq_len).pow(2).float()


def normaliser_on(normaliser: Normaliser, device) -> Normaliser:
    return Normaliser(**{name: value.to(device) for name, value in vars(normaliser).items()})


def normalise_batch(batch: dict, normaliser: Normaliser) -> dict:
    """A gathered batch with its features normalised (normaliser on the batch's device); frames masked in
    the batch become exactly zero. Normalising per batch, not per split, lets every fold and ablation
    variant share one copy of the raw features."""
    out = dict(batch)
    out["visual_stored"] = batch["visual"]  # as stored (--prompt-input visual reads it)
    for name in ("visual", "audio"):
        mean, std = getattr(normaliser, f"{name}_mean"), getattr(normaliser, f"{name}_std")
        out[name] = (batch[name].float() - mean) / std * batch[f"{name}_mask"][..., None]
    return out


def batch_bar(frames: int, desc: str, progress: bool):
    """A bar over one pass's window-frames (frames/s), cleared when the pass ends; off when progress is off
    and, as tqdm does by default, when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=frames, desc=desc, unit="frame", unit_scale=True, leave=False, disable=None if progress else True)



EVAL_BATCHES = {"cpu": 64, "cuda": 512}  # windows per evaluation batch by device kind: no gradients, a GPU takes many at once


@torch.no_grad()
def predict_frames(model, settings: FitSettings, data: SplitData, batch_size: int | None = None, normaliser: Normaliser | None = None, progress: bool = False) -> np.ndarray:
    """Per-frame (valence, arousal) float32 [N, 2] for every frame of data (EXPR: the 8 class probabilities, AU: the 12
    units' probabilities, `model.heads.frame_values`): windows every seq_len / 2
    frames, stitched by a weighted average (settings.stitch); --target last: each frame from its own past window. The prompt head's text tower runs once
    for the whole pass. batch_size: windows per batch (None: `EVAL_BATCHES` of data's device); normaliser: applied
    to each batch (None: data is normalised already); progress: a bar over the pass (on a terminal)."""

    from dva.trainer.model.heads import TASK_WIDTH, frame_values

    model.eval()
    width = TASK_WIDTH[settings.task]
    device = data.visual.device
    batch_size = batch_size or EVAL_BATCHES.get(device.type, EVAL_BATCHES["cpu"])
    normaliser = normaliser_on(normaliser, device) if normaliser is not None else None
    index, inside, target = eval_windows(settings, data)
    length = index.shape[1]
    position = stitch_weights(settings.stitch, length).to(device) if target is None else torch.ones(1, device=device)
    stitched = FrameStitcher(data.n_frames, width, position)
    with autocast(device):
        text = model.text_features()
    bar = batch_bar(index.shape[0] * length, "evaluate", progress)
    for start in range(0, index.shape[0], batch_size):
        rows, valid = index[start : start + batch_size], inside[start : start + batch_size]
        bar.update(rows.shape[0] * length)
        batch = gather(data, rows, valid)
        if normaliser is not None:
            batch = normalise_batch(batch, normaliser)
        with autocast(device):
            va = frame_values(settings.task, model(**model_inputs(settings, batch), text=text)).float()
        if target is not None:  # one prediction per window, its target frame's
            rows, valid = target[start : start + batch_size][:, None], valid[:, :1]
        stitched.add(rows, valid, va)
    bar.close()
    return stitched.frames()


def evaluate(pred: np.ndarray, data: SplitData, thresholds=None) -> dict:
    """ABAW's CCC over all valid frames concatenated, and per track (EXPR, AU: the task's figure per track; thresholds:
    AU's per unit, None: 0.5)."""
    labels = data.labels.cpu().numpy()
    result = evaluate_frames(pred, data, thresholds)
    result["per_track"] = {}
    for i, track in enumerate(data.tracks):
        part = data.track_slice(i)
        if task_of(labels) == "mtl":
            scores = frame_scores(pred[part], labels[part], thresholds)
            result["per_track"][track] = {"frames": int(part.stop - part.start), "valid": int(data.label_mask[part].sum()), **{k: scores[k] for k in MTL_FIGURES}}
            continue
        if labels.shape[1] != 2:
            scores = frame_scores(pred[part], labels[part], thresholds)
            name = FIGURE_NAMES[task_of(labels)]
            result["per_track"][track] = {"frames": int(part.stop - part.start), "valid": int(data.label_mask[part].sum()), name: scores[name]}
            continue
        result["per_track"][track] = {
            "frames": int(part.stop - part.start),
            "valid": int(data.label_mask[part].sum()),
            "ccc_v": ccc(pred[part, 0], labels[part, 0]),
            "ccc_a": ccc(pred[part, 1], labels[part, 1]),
        }
    return result


def smooth(pred: np.ndarray, data: SplitData, seconds) -> np.ndarray:
    """pred [N, 2] with a centred Gaussian of standard deviation `seconds` applied along each track of data
    (sigma in frames = seconds x the track's fps; weights renormalised at the track's ends, so an end
    is not pulled towards zero). seconds: one width for both dimensions, or one per dimension (see
    `smooth_widths`); a dimension of width 0 is left unchanged, and 0 for both returns pred itself."""
    if pred.shape[1] == MTL_WIDTH:
        return smooth_mtl(pred, data, seconds)
    widths = smooth_widths(seconds)
    if widths == (0.0, 0.0):
        return pred
    out = np.array(pred, dtype=np.float32, copy=True)
    if pred.shape[1] != 2:  # EXPR's or AU's probabilities: one width for every column
        for i in range(len(data.tracks)):
            part = data.track_slice(i)
            out[part] = gaussian_smooth(pred[part], widths[0] * float(data.attrs[i]["fps"]))
        return out
    for i in range(len(data.tracks)):
        part = data.track_slice(i)
        for column, width in enumerate(widths):
            if width > 0:  # each column is smoothed on its own: the same figures as both at once with one width
                out[part, column] = gaussian_smooth(pred[part, column : column + 1], width * float(data.attrs[i]["fps"]))[:, 0]
    return out


DIMENSIONS = ("valence", "arousal")  # the columns of a prediction, and the keys of a per-dimension width
MTL_WIDTHS = {"va": DIMENSIONS, "expr": ("expression",), "au": ("aus",)}  # MTL's widths: {"valence", "arousal", "expression", "aus"}


def mtl_widths(seconds) -> dict[str, float]:
    """MTL's four widths from its record ({"valence", "arousal", "expression", "aus"}) or from --smooth (one width for
    every part, or V,A: VA's per dimension, EXPR and AU then valence's)."""
    if isinstance(seconds, dict) and "expression" in seconds:
        return {name: float(seconds[name]) for names in MTL_WIDTHS.values() for name in names}
    valence, arousal = smooth_widths(seconds)
    return {"valence": valence, "arousal": arousal, "expression": valence, "aus": valence}


def smooth_mtl(pred: np.ndarray, data: SplitData, seconds) -> np.ndarray:
    """An MTL prediction [N, 22] smoothed part by part (`mtl_widths`): VA per dimension, EXPR's and AU's probabilities
    each with its own width."""
    from dva.data.tasks import MTL_PRED

    widths = mtl_widths(seconds)
    out = np.array(pred, dtype=np.float32, copy=True)
    for task, names in MTL_WIDTHS.items():
        chosen = tuple(widths[n] for n in names) if task == "va" else widths[names[0]]
        out[:, MTL_PRED[task]] = smooth(pred[:, MTL_PRED[task]], data, chosen)
    return out


def part_data(data: SplitData, task: str) -> SplitData:
    """The tracks of an MTL split with one part's labels only (va, expr or au: `MTL_LABELS`), to score that part."""
    import dataclasses

    from dva.data.tasks import MTL_LABELS

    labels = data.labels[:, MTL_LABELS[task]]
    return dataclasses.replace(data, labels=labels, label_mask=~torch.isnan(labels).any(dim=1))


def smooth_widths(seconds) -> tuple[float, float]:
    """(valence, arousal) seconds of smoothing from one width (both dimensions), a pair, "S" or "V,A" (text, as
    --smooth takes it) or {"valence": V, "arousal": A} (as metrics.json records it); ConfigError unless 0 or more."""
    if isinstance(seconds, dict):
        seconds = tuple(seconds.get(d) for d in DIMENSIONS)
    elif isinstance(seconds, str) and "," in seconds:
        seconds = tuple(seconds.split(","))
    elif not isinstance(seconds, (tuple, list)):
        seconds = (seconds, seconds)
    try:
        widths = tuple(float(s) for s in seconds)
    except (TypeError, ValueError):
        widths = ()
    if len(widths) != 2 or not all(0 <= w < float("inf") for w in widths):
        shown = ",".join(map(str, seconds)) if isinstance(seconds, tuple) else seconds
        raise ConfigError(f"--smooth must be 0 or more seconds, one width or V,A (one per dimension), not {shown!r}")
    return widths


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """values [T, C] -> [T, C]: a centred Gaussian (sigma in rows), normalised by the weight inside the track."""
    frames = values.shape[0]
    if sigma <= 0 or frames < 2:
        return values
    radius = int(np.ceil(3 * sigma))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma * sigma))
    weight = np.convolve(np.ones(frames), kernel)[radius : radius + frames]
    columns = [np.convolve(values[:, c].astype(np.float64), kernel)[radius : radius + frames] / weight for c in range(values.shape[1])]
    return np.stack(columns, axis=1).astype(np.float32)


def smooth_choices(settings: FitSettings) -> tuple[float, ...]:
    """The smoothing widths `dva fit` chooses from: none when each prediction sees only the past (a centred Gaussian
    would look ahead; the released code smooths nothing), `SMOOTH_CHOICES` otherwise."""
    return (0.0,) if settings.past_only else SMOOTH_CHOICES


def choose_smoothing(pred: np.ndarray, data: SplitData, choices=SMOOTH_CHOICES) -> dict:
    """For valence and arousal separately, the smoothing width (seconds) with the best CCC of that dimension of
    pred on data (ties: the smaller width), and the CCC of every width tried:
    {"seconds": {"valence": s, "arousal": s}, "ccc_by_seconds": {"valence": {str(seconds): ccc}, "arousal": {...}}}.
    A dimension's smoothing never changes the other's CCC, so P_VA is the best any pair of widths gives.
    EXPR, AU: `choose_class_smoothing` (one width; AU's per-unit thresholds too); MTL: `choose_mtl_smoothing`."""
    if pred.shape[1] == MTL_WIDTH:
        return choose_mtl_smoothing(pred, data, choices)
    if pred.shape[1] != 2:
        return choose_class_smoothing(pred, data, choices)
    scores = {float(s): evaluate_frames(smooth(pred, data, float(s)), data) for s in sorted(choices)}
    chosen, by_seconds = {}, {}
    for dimension, key in zip(DIMENSIONS, ("ccc_v", "ccc_a")):
        best = min(scores)
        for seconds, score in scores.items():
            if np.isfinite(score[key]) and (not np.isfinite(scores[best][key]) or score[key] > scores[best][key]):
                best = seconds
        chosen[dimension] = best
        by_seconds[dimension] = {str(s): score[key] for s, score in scores.items()}
    return {"seconds": chosen, "ccc_by_seconds": by_seconds}


def choose_class_smoothing(pred: np.ndarray, data: SplitData, choices=SMOOTH_CHOICES) -> dict:
    """EXPR, AU: the one smoothing width (seconds, of the probabilities) with the best figure on data (ties: the smaller;
    AU scored at 0.5), and for AU the per-unit thresholds then chosen on the smoothed predictions (`choose_thresholds`):
    {"seconds": s, "figure_by_seconds": {str(s): figure}, "thresholds": [12] (AU only)}."""
    labels = data.labels.cpu().numpy()
    by_seconds = {float(c): task_figure(frame_scores(smooth(pred, data, float(c)), labels)) for c in sorted(choices)}
    best = min(by_seconds)
    for seconds, value in by_seconds.items():
        if np.isfinite(value) and (not np.isfinite(by_seconds[best]) or value > by_seconds[best]):
            best = seconds
    chosen = {"seconds": best, "figure_by_seconds": {str(k): v for k, v in by_seconds.items()}}
    if task_of(labels) == "au":
        chosen["thresholds"] = choose_thresholds(smooth(pred, data, best), labels)
    return chosen


def choose_mtl_smoothing(pred: np.ndarray, data: SplitData, choices=SMOOTH_CHOICES) -> dict:
    """MTL: each part's widths chosen on its own labels as its single task chooses them (VA per dimension, EXPR one
    width, AU one width then the per-unit thresholds): {"seconds": {"valence", "arousal", "expression", "aus"},
    "thresholds": [12], "parts": {task: that task's record}}."""
    from dva.data.tasks import MTL_PRED

    parts = {task: choose_smoothing(pred[:, MTL_PRED[task]], part_data(data, task), choices) for task in MTL_WIDTHS}
    seconds = {**parts["va"]["seconds"], "expression": parts["expr"]["seconds"], "aus": parts["au"]["seconds"]}
    return {"seconds": seconds, "thresholds": parts["au"]["thresholds"], "parts": parts}


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # the grid AU's per-unit thresholds are chosen from


def choose_thresholds(pred: np.ndarray, labels: np.ndarray) -> list[float]:
    """AU: for each unit, the threshold of THRESHOLDS with the best F1 of pred [N, 12] (probabilities) against labels
    [N, 12] (NaN where not annotated); ties: the one nearest 0.5."""
    from dva.metrics import f1_binary

    chosen = []
    for unit in range(labels.shape[1]):
        scores = [(f1_binary(pred[:, unit] >= t, labels[:, unit]), -abs(t - 0.5), t) for t in THRESHOLDS]
        chosen.append(max(scores)[2])
    return chosen


FIGURE_NAMES = {"va": "p_va", "expr": "expr_f1", "au": "au_f1", "mtl": "p_mtl"}  # each task's figure: what selects epochs and ranks variants
MTL_FIGURES = ("ccc_v", "ccc_a", "expr_f1", "au_f1", "p_mtl")  # P_MTL and its four parts


def task_figure(scores: dict | None) -> float:
    """The task's figure in a scores dict (`frame_scores`, a best or final record): P_MTL (first: its record holds its
    parts' figures too), P_VA, EXPR's macro F1 or AU's mean F1; NaN when there is none."""
    for name in ("p_mtl", *FIGURE_NAMES.values()):
        if scores and scores.get(name) is not None:
            return float(scores[name])
    return float("nan")


def evaluate_frames(pred: np.ndarray, data: SplitData, thresholds=None) -> dict:
    """CCC_V, CCC_A and P_VA over all valid frames of data concatenated (no per-track figures); EXPR, AU: F1s
    (`frame_scores`)."""
    return frame_scores(pred, data.labels.cpu().numpy(), thresholds)


def frame_scores(pred: np.ndarray, labels: np.ndarray, thresholds=None) -> dict:
    """CCC_V, CCC_A and P_VA of pred [N, 2] against labels [N, 2] (NaN where invalid), every frame at once. EXPR (labels
    [N, 1]): expr_f1, the macro F1 of pred's argmax over the 8 classes, and expr_f1_per_class; AU (labels [N, 12]):
    au_f1, the mean F1 of the 12 units with pred >= thresholds (per unit; None: 0.5), and au_f1_per_au."""
    task = task_of(labels)
    if task == "mtl":
        return mtl_scores(pred, labels, thresholds)
    if task != "va":
        return _class_scores(task, pred, labels, thresholds)
    result = {"ccc_v": ccc(pred[:, 0], labels[:, 0]), "ccc_a": ccc(pred[:, 1], labels[:, 1])}
    result["p_va"] = p_va(result["ccc_v"], result["ccc_a"])
    return result


def mtl_scores(pred: np.ndarray, labels: np.ndarray, thresholds=None) -> dict:
    """P_MTL = (CCC_V + CCC_A) / 2 + EXPR's macro F1 over 8 classes + AU's mean F1 over 12 of pred [N, 22] against
    labels [N, 15] (`MTL_PRED`, `MTL_LABELS`; each part over its own annotated frames), with its parts: ccc_v, ccc_a,
    p_va, expr_f1, au_f1 and the per-class and per-unit F1s (thresholds: AU's). Without VA labels the CCCs, and so
    P_MTL, are NaN; an F1 without labels is 0 (`dva.metrics.f1_binary`)."""
    from dva.data.tasks import MTL_LABELS
    from dva.data.tasks import MTL_PRED

    scores = {}
    for task in MTL_WIDTHS:
        scores.update(frame_scores(pred[:, MTL_PRED[task]], labels[:, MTL_LABELS[task]], thresholds if task == "au" else None))
    scores["p_mtl"] = scores["p_va"] + scores["expr_f1"] + scores["au_f1"]
    return scores


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _class_scores(task: str, pred: np.ndarray, labels: np.ndarray, thresholds) -> dict:
    from dva.data.tasks import AU_NAMES, EXPR_CLASSES
    from dva.metrics import f1_binary, f1_per_class

    if task == "expr":
        per = f1_per_class(np.argmax(pred, axis=1), labels[:, 0], len(EXPR_CLASSES))
        return {"expr_f1": float(np.mean(per)), "expr_f1_per_class": dict(zip(EXPR_CLASSES, per))}
    cut = np.full(labels.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    per = [f1_binary(pred[:, unit] >= cut[unit], labels[:, unit]) for unit in range(labels.shape[1])]
    return {"au_f1": float(np.mean(per)), "au_f1_per_au": dict(zip(AU_NAMES, per))}
