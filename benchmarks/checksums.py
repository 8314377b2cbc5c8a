"""What checksumming every chunk costs: the same tracks written through extraction's write path
(`dva.pipeline.writing.write_track_sets`) and loaded by fit (`load_features`, train + val), with and without the
checksum (Zarr: crc32c after blosc, every chunk stored; HDF5: Fletcher32 after lzf), side by side in one run:
each track is written into the four stores in turn (the order alternating), each store then loaded (the order
alternating between repeats), so that other work on the machine falls on every case alike. Also `dva verify`'s read
of every chunk.

    python benchmarks/checksums.py [--tracks 20] [--frames 1500] [--repeats 5] [--quick]

Tracks are CLIP/AST-sized (ViT-B-32 visual 512-d per frame, AST 768-d at 10 Hz, float16), 80 % train, 20 % val.
Figures are the best of the repeats (the least disturbed by other work on the machine, as `timeit` takes); the stores
are written anew each repeat, and loaded and verified three times each. The last line times the checksum alone (google_crc32c over the arrays' bytes).
--quick: 4 tracks of 300 frames, one repeat.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import dva
from dva.pipeline.writing import write_track_sets
from dva.stores import open_store, verify
from dva.trainer.fit import load_features

QUICK = dict(tracks=4, frames=300, repeats=1)
LOADS = 3  # loads and verifies of each store per repeat


def tracks(count: int, frames: int, seed: int = 0) -> list[tuple[str, str, dict, dict]]:
    """(split, track, own arrays, made sets) of each track, as `dva extract` hands them to the writer."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        steps = frames * 10 // 25
        labels = rng.uniform(-1, 1, (frames, 2)).astype(np.float32)
        own = {"frame_time": (np.arange(frames) / 25).astype(np.float32), "labels": labels}
        made = {"visual": ("visual", {"data": rng.normal(size=(frames, 512)).astype(np.float16), "mask": np.ones(frames, bool)}),
                "audio": ("audio", {"data": rng.normal(size=(steps, 768)).astype(np.float16), "time": (np.arange(steps) / 10).astype(np.float32)})}
        out.append(("val" if i % 5 == 1 else "train", f"track_{i:04d}", own, made))
    return out


def new_store(path: Path, checksums: bool):
    """An empty store at path with the two sets recorded, open for writing."""
    store = open_store(path, "a")
    store.checksums = checksums
    if not checksums:  # as a store written before dva checksummed its chunks
        store.delete_attrs(["checksums"])
    store.set_attrs({"dva_version": dva.__version__})
    for name in ("visual", "audio"):
        store.add_feature_set(name, {"modality": name, "dim": 512 if name == "visual" else 768, "encoder": {"family": "benchmark"}, "preprocessing": {}})
    for split in ("train", "val"):
        store.ensure_split(split)
    return store


def write_all(paths: dict, data: list) -> dict:
    """Write every track into each case's new store, track by track, the cases' order alternating from track to track
    (so that the machine's other work falls on every case alike); {case: seconds}."""
    stores = {case: new_store(path, case[1]) for case, path in paths.items()}
    seconds = dict.fromkeys(paths, 0.0)
    try:
        for i, (split, track, own, made) in enumerate(data):
            attrs = {"video": f"videos/batch1/{track}.mp4", "subject": None, "fps": 25.0, "n_frames": own["frame_time"].shape[0], "has_audio": True}
            for case in list(paths) if i % 2 == 0 else list(paths)[::-1]:
                start = time.perf_counter()
                write_track_sets(stores[case], split, track, own, made, attrs, overwrite=False)
                seconds[case] += time.perf_counter() - start
    finally:
        for store in stores.values():
            store.close()
    return seconds


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def size_mb(path: Path) -> float:
    return (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="4 tracks of 300 frames, one repeat (for the tests)")
    args = parser.parse_args()
    if args.quick:
        args.tracks, args.frames, args.repeats = QUICK["tracks"], QUICK["frames"], QUICK["repeats"]
    data = tracks(args.tracks, args.frames)
    raw_mb = sum(a.nbytes for _, _, own, made in data for a in [*own.values(), *(x for _, arrays in made.values() for x in arrays.values())]) / 1e6
    cases = [(backend, checksums) for backend in ("zarr", "hdf5") for checksums in (False, True)]
    figures = {case: {"write": [], "load": [], "verify": [], "mb": 0.0} for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            paths = {case: Path(tmp) / f"{repeat}-{case[0]}-{case[1]}{'.h5' if case[0] == 'hdf5' else ''}" for case in cases}
            for case, seconds in write_all(paths, data).items():
                figures[case]["write"].append(seconds)
            for turn in range(LOADS):  # a load is short, so the more exposed to the machine's other work: more of them
                for case in cases if (repeat + turn) % 2 == 0 else cases[::-1]:
                    figures[case]["load"].append(timed(load_features, str(paths[case])))
                    figures[case]["verify"].append(timed(verify, str(paths[case]), 4, False))
                    figures[case]["mb"] = size_mb(paths[case])
            for path in paths.values():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(f"{args.tracks} tracks x {args.frames} frames ({raw_mb:.0f} MB of arrays), best of {args.repeats} writes, {args.repeats * LOADS} loads and verifies; dva {dva.__version__}\n")
    print("| store | checksums | write s | write vs none | load s | load vs none | verify s | size MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backend, checksums in cases:
        case, base = figures[(backend, checksums)], figures[(backend, False)]
        w, lo, v = (min(case[k]) for k in ("write", "load", "verify"))
        w0, l0 = min(base["write"]), min(base["load"])
        name = ("crc32c" if backend == "zarr" else "Fletcher32") if checksums else "none"
        print(f"| {backend} | {name} | {w:.3f} | {w / w0 - 1:+.0%} | {lo:.3f} | {lo / l0 - 1:+.0%} | {v:.3f} | {case['mb']:.1f} |")
    print(f"\ncrc32c alone over the {raw_mb:.0f} MB: {crc_seconds(data):.3f} s")


def crc_seconds(data: list) -> float:
    """The checksum's own cost: google_crc32c (what zarr's crc32c codec calls) over every array's bytes, once."""
    import google_crc32c

    arrays = [a.tobytes() for _, _, own, made in data for a in [*own.values(), *(x for _, arrays in made.values() for x in arrays.values())]]
    start = time.perf_counter()
    for raw in arrays:
        google_crc32c.value(raw)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
