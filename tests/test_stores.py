import multiprocessing

import numpy as np
import pytest

from dva.errors import StoreError
from dva.stores import convert, open_store


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


@pytest.mark.parametrize("name", ["store", "store.h5"])
def test_round_trip_of_arrays_and_attrs(tmp_path, name):
    path = tmp_path / name
    with open_store(path, "a") as store:
        store.set_attrs({"visual_encoder": {"model": "m", "mean": (0.1, 0.2)}, "dva_version": "0"})
        store.ensure_split("train")
        store.write_track("train", "a", track_arrays(), {"fps": 25.0, "subject": None, "video": "videos/batch1/a.mp4"})
        store.write_track("train", "quiet", track_arrays(audio_rows=0), {"fps": 30.0, "subject": "left"})
    with open_store(path) as store:
        assert store.attrs["visual_encoder"] == {"model": "m", "mean": [0.1, 0.2]}
        assert store.tracks("train") == ["a", "quiet"] and store.is_complete("train", "a")
        arrays, expected = store.read_track("train", "a"), track_arrays()
        assert arrays["visual"].dtype == np.float16 and arrays["visual_mask"].dtype == bool and arrays["labels"].dtype == np.float32
        np.testing.assert_allclose(arrays["visual"], expected["visual"].astype(np.float16))
        np.testing.assert_array_equal(arrays["labels"], expected["labels"])  # NaN where invalid survives
        assert store.read("train", "quiet", "audio").shape == (0, 6)
        assert store.track_attrs("train", "quiet")["subject"] == "left"
        assert store.track_attrs("train", "a")["subject"] is None


def test_a_write_that_fails_half_way_leaves_the_track_not_complete(tmp_path):
    with open_store(tmp_path / "s", "a") as store:
        arrays = track_arrays()
        arrays["audio"] = np.array([["not", "numbers"]])  # fails to convert after the group exists
        with pytest.raises(ValueError):
            store.write_track("train", "a", arrays, {})
        assert not store.is_complete("train", "a")


def test_failed_tracks_are_reported_and_convert_round_trips(tmp_path):
    with open_store(tmp_path / "s", "a") as store:
        store.set_attrs({"dva_version": "0"})
        store.write_track("val", "a", track_arrays(), {"fps": 25.0})
        store.mark_failed("val", "b", "videos/b.mp4: video cannot be decoded")
        summary = store.summary()["splits"]["val"]
    assert summary["failed"] == {"b": "videos/b.mp4: video cannot be decoded"}
    assert summary["complete"] == 1 and summary["frames"] == 50 and summary["valid_labels"] == 46
    convert(tmp_path / "s", tmp_path / "s.h5", progress=False)
    convert(tmp_path / "s.h5", tmp_path / "back", progress=False)
    with open_store(tmp_path / "s") as a, open_store(tmp_path / "back") as b:
        assert a.summary()["splits"] == b.summary()["splits"] and a.attrs == b.attrs
        for name, values in a.read_track("val", "a").items():
            np.testing.assert_array_equal(values, b.read_track("val", "a")[name])
    with pytest.raises(StoreError, match="already exists"):
        convert(tmp_path / "s", tmp_path / "back", progress=False)


def test_missing_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="dva extract"):
        open_store(tmp_path / "nothing")
    with pytest.raises(StoreError):
        open_store(tmp_path / "nothing.h5")


def _write_tracks(path, names):
    with open_store(path, "a") as store:
        for name in names:
            store.write_track("train", name, track_arrays(seed=int(name[1:])), {"fps": 25.0})


def test_concurrent_writers_of_different_tracks_never_corrupt_the_store(tmp_path):
    path = tmp_path / "s"
    with open_store(path, "a") as store:
        store.set_attrs({"dva_version": "0"})
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
        assert len(store.tracks("train")) == 24 and store.attrs == {"dva_version": "0"}
        for i in range(24):
            assert store.is_complete("train", f"t{i}")
            np.testing.assert_allclose(store.read("train", f"t{i}", "visual"), track_arrays(seed=i)["visual"].astype(np.float16))
