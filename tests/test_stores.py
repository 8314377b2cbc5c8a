import multiprocessing

import numpy as np
import pytest

from dva.errors import StoreError
from dva.stores import add_checksums, complete_sets, convert, open_store, upgrade, why_not_usable

VISUAL, AUDIO = "clip-m-random", "ast-window"
SETS = {VISUAL: {"modality": "visual", "dim": 8, "encoder": {"family": "clip", "model": "m", "mean": (0.1, 0.2)}},
        AUDIO: {"modality": "audio", "dim": 6, "encoder": {"family": "ast", "model": "a"}}}


def track_arrays(frames=50, seed=0, audio_rows=20):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-1, 1, (frames, 2)).astype(np.float32)
    labels[5:9] = np.nan
    return {
        "visual": rng.normal(size=(frames, 8)),
        "visual_mask": rng.random(frames) > 0.1,
        "frame_time": np.arange(frames) / 25,
        "audio": rng.normal(size=(audio_rows, 6)),
        "audio_time": np.arange(audio_rows) * 0.1,
        "labels": labels,
    }


def add_sets(store):
    for name, info in SETS.items():
        store.add_feature_set(name, info)


def write_track(store, split, track, arrays, attrs):
    """A track with both sets, as `dva extract` writes it."""
    store.create_track(split, track, {"frame_time": arrays["frame_time"], "labels": arrays["labels"]}, attrs)
    store.write_set(split, track, VISUAL, "visual", {"data": arrays["visual"], "mask": arrays["visual_mask"]})
    store.write_set(split, track, AUDIO, "audio", {"data": arrays["audio"], "time": arrays["audio_time"]})


@pytest.mark.parametrize("name", ["store", "store.h5"])
def test_round_trip_of_arrays_and_attrs(tmp_path, name):
    path = tmp_path / name
    with open_store(path, "a") as store:
        store.set_attrs({"dva_version": "0"})
        add_sets(store)
        store.ensure_split("train")
        write_track(store, "train", "a", track_arrays(), {"fps": 25.0, "subject": None, "video": "videos/batch1/a.mp4"})
        write_track(store, "train", "quiet", track_arrays(audio_rows=0), {"fps": 30.0, "subject": "left"})
    with open_store(path) as store:
        assert store.feature_sets()[VISUAL]["encoder"] == {"family": "clip", "model": "m", "mean": [0.1, 0.2]}
        assert store.tracks("train") == ["a", "quiet"] and store.is_complete("train", "a")
        arrays, expected = store.read_track("train", "a"), track_arrays()
        assert arrays[f"{VISUAL}/data"].dtype == np.float16 and arrays[f"{VISUAL}/mask"].dtype == bool and arrays["labels"].dtype == np.float32
        np.testing.assert_allclose(arrays[f"{VISUAL}/data"], expected["visual"].astype(np.float16))
        np.testing.assert_array_equal(arrays["labels"], expected["labels"])  # NaN where invalid survives
        assert store.read("train", "quiet", f"{AUDIO}/data").shape == (0, 6)
        assert store.track_attrs("train", "quiet")["subject"] == "left"
        assert store.track_attrs("train", "a")["subject"] is None


def test_a_set_that_fails_half_way_is_not_complete_and_the_other_set_stays(tmp_path, monkeypatch):
    with open_store(tmp_path / "s", "a") as store:
        add_sets(store)
        write_track(store, "train", "a", track_arrays(), {})
        with pytest.raises(ValueError):  # bad values are refused before anything is touched
            store.write_set("train", "a", AUDIO, "audio", {"data": np.array([["not", "numbers"]]), "time": np.zeros(1)})
        assert store.is_complete("train", "a")
        write_array = store._write_array

        def disk_full_at_time(group, name, values):  # a fake write error (a full disk) after the set's data landed
            if name == "time":
                raise OSError("No space left on device")
            write_array(group, name, values)

        monkeypatch.setattr(store, "_write_array", disk_full_at_time)
        with pytest.raises(OSError):
            store.write_set("train", "a", AUDIO, "audio", {"data": np.ones((3, 6)), "time": np.zeros(3)})
        state = store.track_state("train", "a")
        assert complete_sets(state) == {VISUAL} and not store.is_complete("train", "a")
        assert why_not_usable(state, [VISUAL, AUDIO]) == f"incomplete ({AUDIO})" and why_not_usable(state, [VISUAL]) is None


def test_failed_sets_are_reported_and_convert_round_trips(tmp_path):
    with open_store(tmp_path / "s", "a") as store:
        store.set_attrs({"dva_version": "0"})
        add_sets(store)
        write_track(store, "val", "a", track_arrays(), {"fps": 25.0})
        store.mark_failed("val", "b", "videos/b.mp4: video cannot be decoded", list(SETS))
        summary = store.summary()["splits"]["val"]
    assert summary["sets"][VISUAL]["failed"] == {"b": "videos/b.mp4: video cannot be decoded"}
    assert summary["sets"][AUDIO]["complete"] == 1 and summary["frames"] == 50 and summary["valid_labels"] == 46
    convert(tmp_path / "s", tmp_path / "s.h5", progress=False)
    convert(tmp_path / "s.h5", tmp_path / "back", progress=False)
    with open_store(tmp_path / "s") as a, open_store(tmp_path / "back") as b:
        assert a.summary()["splits"] == b.summary()["splits"] and a.attrs == b.attrs
        for name, values in a.read_track("val", "a").items():
            np.testing.assert_array_equal(values, b.read_track("val", "a")[name])
    with pytest.raises(StoreError, match="already exists"):
        convert(tmp_path / "s", tmp_path / "back", progress=False)


def write_format_1(path, tracks):
    """A store laid out as dva 0.1 wrote it (one visual and one audio array at each track's root), through the
    store's primitives because today's API no longer writes that layout."""
    with open_store(path, "a") as store:
        store.set_attrs({"dva_version": "0.1.0", "visual_encoder": {"family": "clip", "model": "m", "pretrained": None, "dim": 8},
                         "audio_encoder": {"family": "ast", "model": "MIT/ast-finetuned-audioset-10-10-0.4593", "mode": "window", "dim": 6},
                         "preprocessing": {"visual_source": "crops", "frame_time": "index / fps", "audio_sample_rate": 16000}})
        for i, track in enumerate(tracks):
            group = store._group(f"train/{track}", create=True)
            for name, values in track_arrays(seed=i).items():
                store._write_array(group, name, np.asarray(values).astype({"visual": np.float16, "audio": np.float16, "visual_mask": bool}.get(name, np.float32)))
            store._set_attrs(group, {"fps": 25.0, "complete": True})
        store._set_attrs(store._group("train/broken", create=True), {"complete": False, "error": "videos/broken.mp4: cannot be decoded"})


@pytest.mark.parametrize("name", ["old", "old.h5"])
def test_a_dva_0_1_store_is_refused_in_one_line_then_upgraded_in_place(tmp_path, name):
    path = tmp_path / name
    write_format_1(path, ["a", "b"])
    with open_store(path) as store, pytest.raises(StoreError, match="dva upgrade"):
        store.feature_sets()
    names = {"visual": "clip-m-random", "audio": "ast-window"}
    assert upgrade(path, names, progress=False) == 3
    with open_store(path) as store:
        assert store.layout == 2 and set(store.feature_sets()) == set(names.values())
        assert "visual_encoder" not in store.attrs and store.attrs["timeline"] == {"frame_time": "index / fps"}
        assert store.is_complete("train", "a") and not store.is_complete("train", "broken")
        assert store.summary()["splits"]["train"]["sets"]["ast-window"]["failed"] == {"broken": "videos/broken.mp4: cannot be decoded"}
        arrays = store.read_track("train", "b")
        assert set(arrays) == {"frame_time", "labels", "clip-m-random/data", "clip-m-random/mask", "ast-window/data", "ast-window/time"}
        np.testing.assert_allclose(arrays["ast-window/data"], track_arrays(seed=1)["audio"].astype(np.float16))
    with pytest.raises(StoreError, match="not a dva 0.1 store"):
        upgrade(path, names, progress=False)


def test_missing_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="dva extract"):
        open_store(tmp_path / "nothing")
    with pytest.raises(StoreError):
        open_store(tmp_path / "nothing.h5")


def _write_tracks(path, names):
    with open_store(path, "a") as store:
        for name in names:
            write_track(store, "train", name, track_arrays(seed=int(name[1:])), {"fps": 25.0})


def test_concurrent_writers_of_different_tracks_never_corrupt_the_store(tmp_path):
    path = tmp_path / "s"
    with open_store(path, "a") as store:
        store.set_attrs({"dva_version": "0"})
        add_sets(store)
        store.ensure_split("train")
    context = multiprocessing.get_context("spawn")
    groups = [[f"t{i}" for i in range(w, 24, 4)] for w in range(4)]
    processes = [context.Process(target=_write_tracks, args=(path, names)) for names in groups]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    with open_store(path) as store:
        assert len(store.tracks("train")) == 24 and store.attrs["dva_version"] == "0"
        for i in range(24):
            assert store.is_complete("train", f"t{i}")
            np.testing.assert_allclose(store.read("train", f"t{i}", f"{VISUAL}/data"), track_arrays(seed=i)["visual"].astype(np.float16))


def test_dva_upgrade_names_the_sets_as_extract_would_and_fit_says_to_run_it(tmp_path):
    from tests.conftest import run_cli

    path = tmp_path / "old"
    write_format_1(path, ["a"])
    refused = run_cli("fit", "--features", path, "--out", tmp_path / "run")
    assert refused.returncode == 2 and f"dva upgrade {path}" in refused.stderr and "Traceback" not in refused.stderr
    info = run_cli("info", path)
    assert info.returncode == 0 and "dva upgrade" in info.stdout
    done = run_cli("upgrade", path)
    assert done.returncode == 0, done.stderr
    with open_store(path) as store:
        assert set(store.feature_sets()) == {"clip-m-random", "ast-window"}  # the names `dva extract` gives these encoders


def _info(*args):
    from typer.testing import CliRunner

    from dva.cli import app

    result = CliRunner().invoke(app, ["info", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


def _written_store(path, frames):
    with open_store(path, "a") as store:
        store.set_attrs({"dva_version": "0"})
        add_sets(store)
        write_track(store, "train", "a", track_arrays(frames=frames, audio_rows=frames // 4), {"fps": 25.0})


@pytest.mark.parametrize("name", ["store", "store.h5"])
def test_info_prints_the_size_of_a_local_store(tmp_path, name):
    path = tmp_path / name
    _written_store(path, frames=60_000)  # random float16 features compress little: a few MB
    on_disk = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    with open_store(path) as store:
        assert store.summary()["bytes"] == on_disk > 1e6
    assert f"{on_disk / 1e6:.1f} MB" in _info(path).splitlines()[0]


def test_info_measures_a_store_on_an_fsspec_url_and_says_when_it_cannot(tmp_path):
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    url = f"memory://{tmp_path.name}/store"  # a real zarr store on fsspec's in-memory file system, as on s3://
    _written_store(url, frames=60_000)
    fs, root = fsspec.core.url_to_fs(url)
    stored = sum(fs.info(f)["size"] for f in fs.find(root))
    try:
        with open_store(url) as store:
            assert store.summary()["bytes"] == stored > 1e6
        assert f"{stored / 1e6:.1f} MB" in _info(url).splitlines()[0]

        class RefusingListing(MemoryFileSystem):  # a fake: object storage that denies listing (no s3 here)
            protocol = "refusing"

            @classmethod
            def _strip_protocol(cls, path):
                return super()._strip_protocol(path.removeprefix("refusing://"))

            def du(self, *args, **kwargs):
                raise PermissionError("listing denied")

        fsspec.register_implementation("refusing", RefusingListing, clobber=True)
        assert "size unknown" in _info(f"refusing://{tmp_path.name}/store").splitlines()[0]
    finally:
        fs.rm(root, recursive=True)


def test_the_summary_says_what_each_sets_provenance_means(tmp_path):
    with open_store(tmp_path / "s", "a") as store:
        add_sets(store)
        store.add_feature_set("mine", {"modality": "audio", "dim": 6, "encoder": {"family": "imported"}, "rate": 12.5,
                                       "sources": {"train": {"path": "/d/a"}, "val": {"path": "/d/a"}, "test": {"path": "/d/b"}}})
        store.create_track("train", "a", {"frame_time": np.arange(4) / 25}, {})
        said = store.summary()["provenance"]
    assert said[VISUAL] == {"rate": "per frame", "family": "clip", "source": "m", "maker": "extract"}
    assert said[AUDIO] == {"rate": "rate ?", "family": "ast", "source": "a", "maker": "extract"}
    assert said["mine"] == {"rate": "12.5/s", "family": "imported", "source": "from /d/a (train, val), /d/b (test)", "maker": "import"}
    shown = _info(tmp_path / "s")
    assert "imported from /d/a (train, val), /d/b (test)" in shown and "12.5/s" in shown
    assert "incomplete: a (rerun `dva import` to finish)" in shown and "incomplete: a (rerun `dva extract` to finish)" in shown


def downgrade(source, path) -> dict:
    """The tiny store's tracks laid out as dva 0.1 wrote them (format 1: one visual and one audio array at each
    track's root, the encoders in the root attrs), written with zarr itself. Returns the root attrs."""
    import zarr

    from tests.conftest import TINY_AUDIO, TINY_VISUAL

    with open_store(source) as store:
        sets = store.feature_sets()
        attrs = {"dva_version": "0.1.0", "visual_encoder": sets[TINY_VISUAL]["encoder"], "audio_encoder": sets[TINY_AUDIO]["encoder"],
                 "preprocessing": {**sets[TINY_VISUAL]["preprocessing"], **sets[TINY_AUDIO]["preprocessing"], **store.attrs["timeline"]}}
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update(attrs)
        old_names = {"visual": f"{TINY_VISUAL}/data", "visual_mask": f"{TINY_VISUAL}/mask", "audio": f"{TINY_AUDIO}/data", "audio_time": f"{TINY_AUDIO}/time"}
        for split in store.splits():
            for track, track_attrs in store.track_index(split).items():
                group = root.require_group(f"{split}/{track}")
                own = {name: store.read(split, track, name) for name in ("frame_time", "labels") if store.has_array(split, track, name)}
                for name, values in {**own, **{old: store.read(split, track, new) for old, new in old_names.items()}}.items():
                    group.create_array(name, data=values)
                kept = {k: v for k, v in track_attrs.items() if k not in ("rows", "labelled", "complete", "error", "done_at", "set_rows")}
                group.attrs.update({**kept, "complete": True})
    return attrs


def test_an_interrupted_upgrade_resumes_and_a_run_of_dva_0_1_predicts_on_the_upgraded_store(tiny_store, run_dir, synth_data, tmp_path):
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import torch
    from typer.testing import CliRunner

    from dva.cli import app
    from dva.data.synth import SAMPLE_FILE
    from dva.trainer.results.run_dir import CHECKPOINT
    from tests.conftest import SLOWED, TINY_AUDIO, TINY_VISUAL, assert_stores_equal

    old, clean = tmp_path / "old", tmp_path / "clean"
    attrs = downgrade(tiny_store, old)
    shutil.copytree(old, clean)
    upgrade(clean, {"visual": TINY_VISUAL, "audio": TINY_AUDIO}, progress=False)  # the same store, upgraded without a stop
    add_checksums(clean, progress=False)  # and given its checksums, as `dva upgrade` does next
    tracks = [(split, track) for split in ("test", "train", "val") for track in open_store(tiny_store).tracks(split)]

    def upgraded() -> int:  # tracks whose attrs the upgrade has rewritten, read from the files (not through dva)
        return sum(isinstance(json.loads((old / split / track / "zarr.json").read_text())["attributes"].get("complete"), dict) for split, track in tracks)

    process = subprocess.Popen([sys.executable, "-c", SLOWED, "upgrade", str(old)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and upgraded() < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = upgraded()
    assert 2 <= before < len(tracks) and open_store(old).layout == 1  # killed half way: the root still says format 1
    inside = [(split, track) for split, track in tracks if (old / split / track / "visual").is_dir()
              and isinstance(json.loads((old / split / track / "zarr.json").read_text())["attributes"].get("complete"), dict)]
    assert inside  # and inside a track: its sets begun, its old arrays not yet removed
    result = CliRunner().invoke(app, ["upgrade", str(old)])
    assert result.exit_code == 0, result.stderr
    assert 0 < int(result.stdout.split()[1]) <= len(tracks) - before + 1  # "upgraded N tracks": what was done before the kill is left alone
    for split in ("test", "train", "val"):
        assert_stores_equal(old, clean, split)
    # a run trained by dva 0.1 (its checkpoint names two encoders, no feature sets) predicts on the upgraded store
    # exactly what today's run predicts on the store the features came from
    run, _ = run_dir
    ancient = tmp_path / "run-0.1"
    shutil.copytree(run, ancient)
    checkpoint = torch.load(ancient / CHECKPOINT, map_location="cpu", weights_only=False)
    checkpoint["provenance"] = attrs
    torch.save(checkpoint, ancient / CHECKPOINT)
    outputs = []
    for run_path, store, name in ((ancient, old, "ancient.txt"), (run, tiny_store, "now.txt")):
        result = CliRunner().invoke(app, ["predict", "--run", str(run_path), "--features", str(store), "--out", str(tmp_path / name), "--sample", str(synth_data / SAMPLE_FILE)])
        assert result.exit_code == 0, result.stderr
        outputs.append((tmp_path / name).read_text().splitlines())
    assert len(outputs[0]) > 100 and outputs[0] == outputs[1]
