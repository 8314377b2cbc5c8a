"""The paired bootstrap of `dva ablate` (dva.trainer.paired) at the release's size: 2000 resamples of ~400 held-out
videos, ~376k frames, against the direct way (each resample's frames gathered and scored with dva.metrics.ccc).

    python benchmarks/paired.py [--videos 400] [--frames 376000] [--resamples 2000] [--direct 40] [--repeats 3] [--quick]

Video lengths vary as Aff-Wild2's do (log-normal around the mean); labels are a slow random walk, the two
variants labels plus noise. The direct way is timed on --direct resamples (the same draws) and scaled to
--resamples; the two must agree to 1e-9 on those draws. The vectorised time is the fastest of --repeats. --quick: 40 videos, 20k frames, 200 resamples, 10 direct.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dva.metrics import ccc
from dva.trainer.paired import paired_difference, resample_counts, resampled_p_va, video_sums

QUICK = dict(videos=40, frames=20_000, resamples=200, direct=10, repeats=1)


def dataset(videos: int, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0, 0.6, videos)
    lengths = np.maximum(2, np.round(raw / raw.sum() * frames)).astype(int)
    index = np.repeat(np.arange(videos), lengths)
    labels = np.clip(np.cumsum(rng.normal(0, 0.02, (len(index), 2)), axis=0) % 2 - 1, -1, 1)
    labels[rng.random(len(index)) < 0.03] = np.nan  # invalid frames, as Aff-Wild2 marks some
    return index, labels, labels + rng.normal(0, 0.3, labels.shape), labels + rng.normal(0, 0.35, labels.shape)


def direct(index, labels, a, b, counts) -> np.ndarray:
    """Each resample's frames gathered (a video drawn k times: its frames k times) and scored with dva.metrics."""
    frames = [np.flatnonzero(index == v) for v in range(counts.shape[1])]
    out = []
    for row in counts:
        rows = np.concatenate([frames[v] for v in np.flatnonzero(row) for _ in range(int(row[v]))])
        score = [(ccc(p[rows, 0], labels[rows, 0]) + ccc(p[rows, 1], labels[rows, 1])) / 2 for p in (a, b)]
        out.append(score[1] - score[0])
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--frames", type=int, default=376_000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--direct", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    index, labels, a, b = dataset(args.videos, args.frames)
    times = []
    for _ in range(args.repeats):  # the fastest of a few: a shared machine's other work is not the method's cost
        started = time.perf_counter()
        result = paired_difference(a, b, labels, index, resamples=args.resamples)
        times.append(time.perf_counter() - started)
    vectorised = min(times)
    counts = resample_counts(args.videos, args.resamples)[: args.direct]
    mine = resampled_p_va(video_sums(b, labels, index, args.videos), counts) - resampled_p_va(video_sums(a, labels, index, args.videos), counts)
    started = time.perf_counter()
    reference = direct(index, labels, a, b, counts)
    per_resample = (time.perf_counter() - started) / args.direct
    gap = float(np.max(np.abs(mine - reference)))
    assert gap < 1e-9, f"the vectorised resamples differ from the direct ones by {gap}"
    print(f"{args.videos} videos, {len(index):,} frames, {args.resamples} resamples; diff {result.diff:+.4f} [{result.low:+.4f}, {result.high:+.4f}]; "
          f"max |vectorised - direct| over {args.direct} resamples {gap:.1e}\n")
    print("| way | seconds | vs vectorised |\n| --- | ---: | ---: |")
    print(f"| vectorised (per-video sums, one product) | {vectorised:.2f} | 1.0x |")
    print(f"| direct (gather frames, dva.metrics.ccc), {args.resamples} resamples scaled from {args.direct} | {per_resample * args.resamples:.1f} | "
          f"{per_resample * args.resamples / vectorised:.0f}x |")


if __name__ == "__main__":
    main()
