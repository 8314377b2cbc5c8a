"""Damage in a store: every chunk checksummed, `dva verify` names what is damaged, `dva fit` leaves it out and names it,
`dva extract` redoes exactly it (the store then equals a clean one), and `dva upgrade` gives an older store its checksums."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dva.cli import app
from tests.conftest import TINY_AUDIO, TINY_VISUAL, assert_stores_equal

QUICK = ["--epochs", "1", "--hidden", "16", "--seq-len", "32", "--stride", "16", "--prompt", "none"]


def dva(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def chunk(store: Path, split: str, track: str, array: str, index: str = "0/0") -> Path:
    return store / split / track / array / "c" / index


def damage_three_tracks(store: Path) -> dict[str, tuple[str, str, str]]:
    """Flipped bytes in one chunk, a truncated chunk and a deleted chunk, each in another train track:
    {what: (split, track, set)}."""
    tracks = sorted(p.name for p in (store / "train").iterdir() if (p / "zarr.json").is_file())
    flipped, truncated, deleted = tracks[:3]
    path = chunk(store, "train", flipped, f"{TINY_VISUAL}/data")
    data = bytearray(path.read_bytes())
    data[40:60] = bytes(255 - b for b in data[40:60])
    path.write_bytes(bytes(data))
    path = chunk(store, "train", truncated, f"{TINY_AUDIO}/data")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    chunk(store, "train", deleted, f"{TINY_VISUAL}/mask", "0").unlink()
    return {"flipped": ("train", flipped, TINY_VISUAL), "truncated": ("train", truncated, TINY_AUDIO), "deleted": ("train", deleted, TINY_VISUAL)}


def test_new_stores_checksum_every_chunk_and_say_so(tiny_store):
    track = next(p.name for p in (tiny_store / "train").iterdir() if p.is_dir())
    meta = json.loads((tiny_store / "train" / track / TINY_VISUAL / "data" / "zarr.json").read_text())
    assert meta["codecs"][-1] == {"name": "crc32c"}
    assert json.loads((tiny_store / "zarr.json").read_text())["attributes"]["checksums"] == "crc32c"
    code, out, err = dva("verify", tiny_store, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["damaged"] == [] and report["checksummed"] and report["arrays"] > report["tracks"] > 0


def test_verify_fit_ablate_and_extract_name_and_repair_damage_in_three_tracks(tiny_store, synth_data, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    damaged = damage_three_tracks(store)

    code, out, err = dva("verify", store, "--workers", "3", "--json")
    assert code == 1, err
    found = {(f["split"], f["track"], f["set"]): f["problem"] for f in json.loads(out)["damaged"]}
    assert set(found) == set(damaged.values())
    assert "checksum mismatch" in found[damaged["flipped"]]
    assert "truncated" in found[damaged["truncated"]]
    assert "missing" in found[damaged["deleted"]]
    code, out, err = dva("verify", store)
    assert code == 1 and all(f"train/{track} set {name}" in err for _, track, name in damaged.values()), err

    code, out, err = dva("fit", "--features", store, "--out", tmp_path / "run", "--json", *QUICK)
    assert code == 0, err
    assert "Traceback" not in err and all(track in err for _, track, _ in damaged.values()), err
    warning = next(line for line in err.splitlines() if "left out" in line)
    assert "3 failed" in warning and warning.count("damaged") == 3, warning
    assert np.isfinite(json.loads(out)["best_val"]["p_va"])
    code, out, err = dva("ablate", "--features", store, "--grid", "fusion=concat", *[f"--set={flag[2:].replace('-', '_')}={value}" for flag, value in zip(QUICK[::2], QUICK[1::2])],
                         "--out", tmp_path / "ablation", "--json")
    assert code == 0 and "Traceback" not in err, err
    assert "3 damaged tracks left out: " in err and all(track in err for _, track, _ in damaged.values()), err

    for split in ("train", "val", "test"):  # over the same data: only the damaged train tracks' damaged sets are redone
        code, out, err = dva("extract", "--data", synth_data, "--split", split, "--out", store, "--preset", "tiny", "--batch-size", "32", "--device", "cpu", "--json")
        assert code == 0, err
        report = json.loads(out)
        assert sorted(report["extracted"]) == (sorted(t for _, t, _ in damaged.values()) if split == "train" else []), report
    code, out, err = dva("verify", store)
    assert code == 0, err
    for split in ("train", "val", "test"):
        assert_stores_equal(tiny_store, store, split)


def test_extract_redoes_only_the_damaged_set_of_a_track(tiny_store, synth_data, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    track = sorted(p.name for p in (store / "val").iterdir() if (p / "zarr.json").is_file())[0]
    audio_before = (store / "val" / track / TINY_AUDIO / "data" / "zarr.json").stat().st_mtime_ns
    path = chunk(store, "val", track, f"{TINY_VISUAL}/data")
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))  # the stored checksum itself
    code, out, err = dva("extract", "--data", synth_data, "--split", "val", "--out", store, "--preset", "tiny", "--batch-size", "32", "--device", "cpu")
    assert code == 0, err
    assert f"damaged in the store: val/{track} set {TINY_VISUAL}: " in err and "checksum mismatch" in err
    assert (store / "val" / track / TINY_AUDIO / "data" / "zarr.json").stat().st_mtime_ns == audio_before  # the other set untouched
    assert_stores_equal(tiny_store, store, "val")


def test_info_and_predict_name_a_damaged_track_in_one_line(tiny_store, run_dir, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    unreadable, flipped = sorted(p.name for p in (store / "test").iterdir() if (p / "zarr.json").is_file())[:2]
    chunk(store, "test", flipped, f"{TINY_VISUAL}/data").write_bytes(b"\0" * 40)
    predict = ["predict", "--run", run_dir[0], "--features", store, "--split", "test", "--out", tmp_path / "sub.txt"]
    code, out, err = dva(*predict)  # found only by reading the track: the submission that needs it refuses
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{flipped} (damaged: {TINY_VISUAL}/data: " in err, err
    code, out, err = dva(*predict, "--allow-incomplete")
    assert code == 0 and f"1 of 2 test tracks cannot be predicted: 180 rows filled with valence 0, arousal 0, not predictions: {flipped} (180 rows; damaged" in err, err

    (store / "test" / unreadable / "zarr.json").write_text("{not json")
    code, out, err = dva("info", store)
    assert code == 0 and "Traceback" not in err
    assert f"failed {unreadable}: damaged: its metadata cannot be read" in out, out
    code, out, err = dva(*predict)
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{unreadable} (damaged: its metadata cannot be read" in err, err
    code, out, err = dva("verify", store, "--json")
    assert code == 1
    assert {(f["track"], f["set"]) for f in json.loads(out)["damaged"]} == {(unreadable, None), (flipped, TINY_VISUAL)}


def test_verify_names_a_chunk_of_an_hdf5_store_that_fails_fletcher32(tiny_store, tmp_path):
    import h5py

    h5 = tmp_path / "features.h5"
    assert dva("convert", tiny_store, h5)[0] == 0
    track = sorted(p.name for p in (tiny_store / "val").iterdir() if (p / "zarr.json").is_file())[0]
    with h5py.File(h5, "r") as handle:
        dataset = handle[f"val/{track}/{TINY_VISUAL}/data"]
        assert dataset.fletcher32 and json.loads(handle.attrs["checksums"]) == "fletcher32"
        start = dataset.id.get_chunk_info(0).byte_offset
    data = bytearray(h5.read_bytes())
    data[start + 20 : start + 30] = bytes(10)
    h5.write_bytes(bytes(data))
    code, out, err = dva("verify", h5, "--json")
    assert code == 1, err
    assert [(f["split"], f["track"], f["set"]) for f in json.loads(out)["damaged"]] == [("val", track, TINY_VISUAL)]
    assert "checksum mismatch (Fletcher32)" in json.loads(out)["damaged"][0]["problem"]


@pytest.mark.parametrize("suffix", ["", ".h5"])
def test_upgrade_gives_a_store_written_before_checksums_its_checksums(tiny_store, tmp_path, suffix):
    from dva.stores import open_store

    old = tmp_path / f"old{suffix}"  # val of the tiny store, written as dva wrote stores before checksums
    with open_store(tiny_store) as source, open_store(old, "a") as target:
        target.checksums = False
        target.delete_attrs(["checksums"])
        sets = source.feature_sets()
        target.set_attrs({k: v for k, v in source.attrs.items() if k != "checksums"})
        for track, attrs in source.track_index("val").items():
            own = {n: source.read("val", track, n) for n in ("frame_time", "labels") if source.has_array("val", track, n)}
            target.create_track("val", track, own, {k: v for k, v in attrs.items() if k in ("video", "subject", "fps", "n_frames", "has_audio", "tasks")})
            for name, info in sets.items():
                target.write_set("val", track, name, info["modality"], source.read_set("val", track, name, info["modality"]))
        assert not target.checksummed and not target.is_checksummed("val", track, f"{TINY_VISUAL}/data")
    code, out, err = dva("verify", old)
    assert code == 0 and "dva upgrade" in err, err
    code, out, err = dva("upgrade", old)
    assert code == 0 and "checksums added to" in out, err
    with open_store(old) as upgraded, open_store(tiny_store) as source:
        assert upgraded.checksummed
        for track in upgraded.tracks("val"):
            for name in (f"{TINY_VISUAL}/data", f"{TINY_AUDIO}/time", "frame_time"):
                assert upgraded.is_checksummed("val", track, name)
                np.testing.assert_array_equal(upgraded.read("val", track, name), source.read("val", track, name))
    code, out, err = dva("upgrade", old)
    assert code == 0 and "up to date" in out
