"""Aff-Wild2 VA annotation files: header `valence,arousal`, one line per video frame, -5 = invalid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dva.errors import DataError

INVALID = -5.0


def read_annotation(path: Path) -> np.ndarray:
    """Parse one annotation file.

    Returns float32 [T, 2] (valence, arousal) with NaN rows where the frame is invalid
    (-5 in either column). Raises DataError naming the file and line for an unparseable
    line or a value outside [-1, 1] that is not -5.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read annotation file ({exc})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if number == 1 and not _is_number(text.split(",")[0]):
            continue  # header, e.g. "valence,arousal"
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2 or not all(_is_number(p) for p in parts):
            raise DataError(f"{path}:{number}: expected 'valence,arousal', got {text[:40]!r}")
        values = [float(p) for p in parts]
        for value in values:
            if value != INVALID and not -1.0 <= value <= 1.0:
                raise DataError(f"{path}:{number}: value {value} is outside [-1, 1] and is not -5")
        rows.append(values)
    labels = np.asarray(rows, dtype=np.float32).reshape(-1, 2)
    labels[(labels == INVALID).any(axis=1)] = np.nan
    return labels


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return np.isfinite(value)


def read_test_list(path: Path) -> list[str]:
    """Track names from an ABAW test list file.

    Accepts one name per line or ABAW's `track/00001.jpg,...` sample lines (names are
    deduplicated in order); a header line such as `image_location,...` is skipped.
    """
    names: dict[str, None] = {}
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        text = line.strip().split(",")[0].strip()
        if not text or text.lower() in {"image_location", "image", "video", "track", "name"}:
            continue
        name = text.split("/")[0]
        for suffix in (".mp4", ".avi", ".txt"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        names[name] = None
    return list(names)


NOT_ANNOTATED = -1  # EXPR and AU rows not annotated
EXPR_CLASS_COUNT, AU_COUNT = 8, 12


def read_task_annotation(path: Path, task: str) -> np.ndarray:
    """One annotation file of a task: VA float32 [T, 2] (`read_annotation`), EXPR int8 [T] (0-7, -1 where not
    annotated), AU int8 [T, 12] (0/1, -1 where not annotated). The header line is skipped; a bad line is a DataError
    naming the file and line."""
    if task == "va":
        return read_annotation(path)
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read annotation file ({exc})") from None
    width, allowed, what = (1, range(-1, EXPR_CLASS_COUNT), "one class 0-7 or -1") if task == "expr" else (AU_COUNT, (-1, 0, 1), "12 comma-separated 0/1 (or -1)")
    rows = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        parts = [p.strip() for p in text.split(",")]
        if number == 1 and not _is_number(parts[0]):
            continue  # header, e.g. "Neutral,Anger,..." or "AU1,AU2,..."
        try:
            values = [int(float(p)) if float(p).is_integer() else None for p in parts]
        except ValueError:
            values = [None]
        if len(values) != width or any(v not in allowed for v in values):
            raise DataError(f"{path}:{number}: expected {what}, got {text[:40]!r}")
        rows.append(values)
    labels = np.asarray(rows, dtype=np.int8).reshape(-1, width)
    return labels[:, 0] if task == "expr" else labels


def annotated_rows(labels: np.ndarray, task: str) -> np.ndarray:
    """bool [T]: the frames a task's labels annotate (VA: no NaN; EXPR: not -1; AU: none of the 12 is -1)."""
    if task == "va":
        return ~np.isnan(labels).any(axis=1)
    return labels >= 0 if labels.ndim == 1 else (labels >= 0).all(axis=1)


def fit_rows(labels: np.ndarray, rows: int, task: str) -> np.ndarray:
    """labels cut or padded to rows (padding not annotated: NaN for VA, -1 for EXPR and AU)."""
    if labels.shape[0] >= rows:
        return labels[:rows]
    pad = np.full((rows - labels.shape[0], *labels.shape[1:]), np.nan if task == "va" else NOT_ANNOTATED, dtype=labels.dtype)
    return np.concatenate([labels, pad])
