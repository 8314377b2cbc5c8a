"""Training throughput: a whole epoch (index gathers + model) against the model alone on pre-gathered
batches, and how epoch time grows with a store 1x, 4x, 16x larger. One run, side by side.

    python benchmarks/fit.py [--frames 20000] [--device cpu] [--quick]
    python benchmarks/fit.py --temporal gru,tcn,transformer --seq-len 64,300 [--size 1/16|full] [--device cpu]
    python benchmarks/fit.py --scale release [...]   # `dva fit` on a release-sized store: see benchmarks/fit_scale.py

--temporal: one training epoch per temporal model and window length (stride half the window, dva fit's other
defaults) on random features as many as the release's VA train+val (full) or 1/16 of them, in one process,
side by side: window-frames/s, the training pass's peak memory above the resident data (CUDA: torch's peak
allocation; CPU: the peak resident set), and each rate's ratio to the GRU on 64-frame windows.
--quick: 500 frames, hidden 16, one repeat, and the temporal table on 2,000 frames; seconds, every code path.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dva.trainer.loading.windows import Normaliser, SplitData, gather, window_index
from dva.trainer.evaluate import autocast, build_model, model_inputs, normalise_batch, normaliser_on
from dva.trainer.model.losses import loss as compute_loss
from dva.trainer.settings import FitSettings

QUICK = dict(frames=500, repeats=1, hidden=16)
QUICK_TEMPORAL = dict(frames=2000, kinds=("gru", "tcn", "transformer"), lengths=(64, 300))


def fake_split(frames: int, visual_dim: int, audio_dim: int, track_len: int = 1500, seed: int = 0) -> SplitData:
    """Random features in the store's shapes (throughput does not depend on their values)."""
    rng = np.random.default_rng(seed)
    offsets = np.arange(0, frames + 1, track_len)
    if offsets[-1] != frames:
        offsets = np.append(offsets, frames)
    labels = torch.from_numpy(rng.uniform(-1, 1, (frames, 2)).astype(np.float32))
    return SplitData(
        "train", [f"t{i}" for i in range(len(offsets) - 1)], offsets,
        torch.from_numpy(rng.normal(size=(frames, visual_dim)).astype(np.float32)), torch.ones(frames, dtype=torch.bool),
        torch.from_numpy(rng.normal(size=(frames, audio_dim)).astype(np.float32)), torch.ones(frames, dtype=torch.bool),
        labels, torch.ones(frames, dtype=torch.bool), [{}] * (len(offsets) - 1),
    )


def epoch(model, optimiser, settings, data, normaliser, index, inside, pre_gathered=None) -> float:
    """Seconds for one epoch; with pre_gathered batches only forward+backward+step is timed."""
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(index.shape[0], generator=generator)
    batches = pre_gathered
    sync = (lambda: torch.cuda.synchronize(data.visual.device)) if data.visual.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    steps = range(0, order.shape[0], settings.batch_size)
    for i, b in enumerate(steps):
        if batches is None:
            chosen = order[b : b + settings.batch_size].to(data.visual.device)
            batch = normalise_batch(gather(data, index[chosen], inside[chosen]), normaliser)
        else:
            batch = batches[i]
        with autocast(data.visual.device):  # bf16 on CUDA, as `dva fit` trains
            out = model(**model_inputs(settings, batch))
        out = {k: (v.float() if v is not None else None) for k, v in out.items()}
        value = compute_loss(out, batch["labels"], batch["label_mask"], settings.sigma, settings.lambda_prompt, settings.labels)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
    sync()
    return time.perf_counter() - start


def main() -> None:
    if "--scale" in sys.argv:  # `--scale release`: dva fit itself on a release-sized store (benchmarks/fit_scale.py)
        at = sys.argv.index("--scale")
        if sys.argv[at + 1 : at + 2] != ["release"]:
            raise SystemExit("--scale takes one value: release")
        del sys.argv[at : at + 2]
        from fit_scale import main as release

        return release()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--visual-dim", type=int, default=512)
    parser.add_argument("--audio-dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=FitSettings.hidden, help="GRU and fusion width")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    parser.add_argument("--temporal", default=None, help="the temporal table over these models, e.g. gru,tcn,transformer")
    parser.add_argument("--seq-len", default="64,300", help="with --temporal: window lengths, e.g. 64,300,400")
    parser.add_argument("--size", default="1/16", choices=("1/16", "full"), help="with --temporal: the release's VA train+val or 1/16 of it")
    args = parser.parse_args()
    if args.quick:  # quick sizes become the defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args()
    if args.temporal and not args.quick:
        from fit_scale import RELEASE

        frames = RELEASE["frames"] // (16 if args.size == "1/16" else 1)
        return temporal_table(args, frames, args.temporal.split(","), [int(n) for n in args.seq_len.split(",")], RELEASE["frames"] // RELEASE["tracks"])
    store_size_table(args)
    if args.quick:
        temporal_table(args, QUICK_TEMPORAL["frames"], QUICK_TEMPORAL["kinds"], QUICK_TEMPORAL["lengths"], 1000)


def store_size_table(args) -> None:
    """Epoch time at 1x, 4x, 16x --frames; the data path's share of the epoch."""
    torch.manual_seed(0)
    settings = FitSettings(prompt="none", hidden=args.hidden, device=args.device)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, model: {settings.fusion} fusion, hidden {settings.hidden}, seq_len {settings.seq_len}")

    rows = []
    for scale in (1, 4, 16):
        frames = args.frames * scale
        data = fake_split(frames, args.visual_dim, args.audio_dim)
        data = data.to(device)
        normaliser = normaliser_on(Normaliser.fit(data), device)
        index, inside = (t.to(device) for t in window_index(data.offsets, settings.seq_len, settings.stride))
        model = build_model(settings, {}, args.visual_dim, args.audio_dim, device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr)
        epoch(model, optimiser, settings, data, normaliser, index[:64], inside[:64])  # warm-up
        if scale == 1:  # alternate the two measurements so machine noise hits both alike; keep medians
            generator = torch.Generator().manual_seed(0)
            order = torch.randperm(index.shape[0], generator=generator).to(device)
            pre = [normalise_batch(gather(data, index[order[b : b + settings.batch_size]], inside[order[b : b + settings.batch_size]]), normaliser) for b in range(0, order.shape[0], settings.batch_size)]
            pairs = [(epoch(model, optimiser, settings, data, normaliser, index, inside), epoch(model, optimiser, settings, data, normaliser, index, inside, pre_gathered=pre)) for _ in range(args.repeats)]
            whole, model_only = (float(np.median(column)) for column in zip(*pairs))
            del pre
        else:
            whole = epoch(model, optimiser, settings, data, normaliser, index, inside)
        window_frames = index.shape[0] * settings.seq_len
        rows.append((scale, frames, whole, window_frames / whole))
        if scale == 1:
            print(f"\nepoch with data path: {whole:.2f} s (median of {args.repeats})   model alone on pre-gathered batches: {model_only:.2f} s   data path share: {(whole - model_only) / whole:+.1%}")
            print(f"training throughput: {window_frames / whole:,.0f} window-frames/s (model alone {window_frames / model_only:,.0f})\n")
    print("| store size | frames | epoch s | window-frames/s | epoch time vs 1x |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for scale, frames, seconds, rate in rows:
        print(f"| {scale}x | {frames:,} | {seconds:.2f} | {rate:,.0f} | {seconds / rows[0][2]:.2f}x |")


def memory_mark(device: torch.device) -> int:
    """Start a peak-memory measurement; returns the bytes in use now. CUDA: torch's allocations; CPU: the resident set,
    after handing freed heap memory back to the system (malloc_trim), so that a peak is not hidden in memory an
    earlier variant freed but the allocator kept."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set (VmHWM) starts again from now
    return _status_kb("VmRSS") * 1024


def memory_peak(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))


def temporal_table(args, frames: int, kinds, lengths, track_len: int) -> None:
    """One epoch per temporal model x window length on one copy of random features; rates and peaks side by side."""
    device = torch.device(args.device)
    data = fake_split(frames, args.visual_dim, args.audio_dim, track_len=track_len).to(device)
    normaliser = normaliser_on(Normaliser.fit(data), device)
    print(f"\ntemporal models: {frames:,} frames ({len(data.tracks)} tracks of {track_len}), hidden {args.hidden}, {args.device}, "
          f"dva fit's batch of {FitSettings.batch_size} windows, stride half the window; peak: the training pass above the resident data\n")
    rows = {}
    for seq_len in sorted({64, *lengths}):
        for kind in kinds if seq_len in lengths else ["gru"]:  # the GRU on 64 frames: every ratio's reference
            torch.manual_seed(0)
            settings = FitSettings(prompt="none", hidden=args.hidden, device=args.device, temporal=kind, seq_len=seq_len, stride=max(1, seq_len // 2))
            index, inside = (t.to(device) for t in window_index(data.offsets, settings.seq_len, settings.stride))
            model = build_model(settings, {}, args.visual_dim, args.audio_dim, device)
            optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr)
            epoch(model, optimiser, settings, data, normaliser, index[:64], inside[:64])  # warm-up (and the optimiser's state)
            base = memory_mark(device)
            seconds = epoch(model, optimiser, settings, data, normaliser, index, inside)
            rows[kind, seq_len] = (index.shape[0] * seq_len / seconds, memory_peak(device) - base)
            del model, optimiser
    reference = rows["gru", 64][0]
    print("| temporal | window | window-frames/s | vs gru at 64 | peak memory |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (kind, seq_len), (rate, peak) in rows.items():
        if kind in kinds and seq_len in lengths:
            print(f"| {kind} | {seq_len} | {rate:,.0f} | {rate / reference:.2f}x | {peak / 2**20:,.0f} MiB |")


if __name__ == "__main__":
    main()
