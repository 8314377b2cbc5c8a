"""The paired bootstrap of `dva ablate` (dva.trainer.paired) at the release's size, per task: 2000 resamples of ~400
held-out videos against the direct way (each resample's frames gathered and scored as `dva fit` scores a split).

    python benchmarks/paired.py [--task va,expr,au] [--videos 400] [--frames N] [--resamples 2000] [--direct 40] [--repeats 3] [--quick]

Frames per task (the ABAW5/6 validation sizes unless --frames): VA 376k, EXPR 280k, AU 446k. Video lengths vary as
Aff-Wild2's do (log-normal around the mean). VA: labels a slow random walk, the two variants labels plus noise.
EXPR: a class that changes every 10-200 frames, each variant's 8 probabilities right about 60 %/55 % of the time.
AU: 12 units on about 30 % of the time, each variant's probabilities the truth plus noise. A few per cent of the
frames are not annotated. The direct way is timed on --direct resamples (the same draws) and scaled to
--resamples; the two must agree to 1e-9 on those draws. The vectorised time is the fastest of --repeats.
--quick: 40 videos, 20k frames, 200 resamples, 10 direct.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dva.trainer.paired import figure, paired_difference, resample_counts, resampled_f1, resampled_p_va, video_counts, video_sums

QUICK = dict(videos=40, frames=20_000, resamples=200, direct=10, repeats=1)
FRAMES = {"va": 376_000, "expr": 280_000, "au": 446_000}  # ABAW5/6 validation frames of each challenge
REDUCED = {"va": "per-video sums", "expr": "per-video TP/FP/FN of 8 classes", "au": "per-video TP/FP/FN of 12 units"}


def dataset(task: str, videos: int, frames: int, seed: int = 0):
    """(the video of each frame, labels as the trainer holds them, variant a's predictions, variant b's)."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0, 0.6, videos)
    lengths = np.maximum(2, np.round(raw / raw.sum() * frames)).astype(int)
    index = np.repeat(np.arange(videos), lengths)
    n = len(index)
    missing = rng.random(n) < 0.03
    if task == "va":
        labels = np.clip(np.cumsum(rng.normal(0, 0.02, (n, 2)), axis=0) % 2 - 1, -1, 1)
        labels[missing] = np.nan
        return index, labels, labels + rng.normal(0, 0.3, labels.shape), labels + rng.normal(0, 0.35, labels.shape)
    if task == "expr":
        runs = rng.integers(10, 200, n // 10 + 1)
        classes = np.repeat(rng.integers(0, 8, len(runs)), runs)[:n]
        labels = classes.astype(np.float64)[:, None]
        labels[missing] = np.nan

        def variant(right: float) -> np.ndarray:
            scores = rng.random((n, 8))
            hit = rng.random(n) < right
            scores[hit, classes[hit]] += 1.0
            return scores / scores.sum(axis=1, keepdims=True)

        return index, labels, variant(0.6), variant(0.55)
    labels = (rng.random((n, 12)) < 0.3).astype(np.float64)
    labels[missing] = np.nan
    truth = np.nan_to_num(labels, nan=0.0)
    return index, labels, np.clip(truth * 0.4 + rng.random(labels.shape) * 0.6, 0, 1), np.clip(truth * 0.35 + rng.random(labels.shape) * 0.6, 0, 1)


def direct(index, labels, a, b, counts) -> np.ndarray:
    """Each resample's frames gathered (a video drawn k times: its frames k times) and scored as a split is."""
    frames = [np.flatnonzero(index == v) for v in range(counts.shape[1])]
    out = []
    for row in counts:
        rows = np.concatenate([frames[v] for v in np.flatnonzero(row) for _ in range(int(row[v]))])
        out.append(figure(b[rows], labels[rows]) - figure(a[rows], labels[rows]))
    return np.array(out)


def vectorised_draws(task: str, index, labels, a, b, videos: int, counts) -> np.ndarray:
    reduce, resampled = (video_sums, resampled_p_va) if task == "va" else (video_counts, resampled_f1)
    return resampled(reduce(b, labels, index, videos), counts) - resampled(reduce(a, labels, index, videos), counts)


def measure(task: str, args) -> tuple[str, str]:
    """(the task's summary line, its table rows)."""
    frames = args.frames or (QUICK["frames"] if args.quick else FRAMES[task])
    index, labels, a, b = dataset(task, args.videos, frames)
    times = []
    for _ in range(args.repeats):  # the fastest of a few: a shared machine's other work is not the method's cost
        started = time.perf_counter()
        result = paired_difference(a, b, labels, index, resamples=args.resamples)
        times.append(time.perf_counter() - started)
    vectorised = min(times)
    counts = resample_counts(args.videos, args.resamples)[: args.direct]
    mine = vectorised_draws(task, index, labels, a, b, args.videos, counts)
    started = time.perf_counter()
    reference = direct(index, labels, a, b, counts)
    per_resample = (time.perf_counter() - started) / args.direct
    gap = float(np.max(np.abs(mine - reference)))
    assert gap < 1e-9, f"{task}: the vectorised resamples differ from the direct ones by {gap}"
    line = (f"{task}: {args.videos} videos, {len(index):,} frames, {args.resamples} resamples; diff {result.diff:+.4f} "
            f"[{result.low:+.4f}, {result.high:+.4f}]; max |vectorised - direct| over {args.direct} resamples {gap:.1e}")
    rows = (f"| {task} | vectorised ({REDUCED[task]}, one product) | {vectorised:.2f} | 1.0x |\n"
            f"| {task} | direct (gather frames, score), {args.resamples} resamples scaled from {args.direct} | {per_resample * args.resamples:.1f} | "
            f"{per_resample * args.resamples / vectorised:.0f}x |")
    return line, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="va,expr,au", help="comma-separated: va, expr, au")
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--frames", type=int, default=None, help="frames per task (default: its validation size)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--direct", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        vars(args).update({k: v for k, v in QUICK.items() if k != "frames"})
    done = [measure(task.strip(), args) for task in args.task.split(",") if task.strip()]
    print("\n".join(line for line, _ in done) + "\n")
    print("| task | way | seconds | vs vectorised |\n| --- | --- | ---: | ---: |")
    print("\n".join(rows for _, rows in done))


if __name__ == "__main__":
    main()
