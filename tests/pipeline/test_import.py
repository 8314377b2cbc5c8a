"""`dva import`: features computed elsewhere (.npy/.npz per track) into a copy of the tiny store, real zarr and numpy."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.pipeline.claims import claims_for
from dva.stores import complete_sets, open_store, why_not_usable
from tests.conftest import BLOCKED, TINY_AUDIO, TINY_VISUAL

NAME = "my-feats"
FIT = ["--epochs", "2", "--patience", "2", "--hidden", "32", "--seq-len", "32", "--stride", "16", "--batch-size", "16"]


def dva(*args):
    """(exit code, stdout, stderr) of one command, in process."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def dva_import(store, split, folder, *extra, name=NAME, modality="audio"):
    return dva("import", "--store", store, "--split", split, "--name", name, "--modality", modality, folder, "--json", *extra)


@pytest.fixture
def store(tiny_store, tmp_path) -> Path:
    """A private copy of the session's tiny store, to write into."""
    return Path(shutil.copytree(tiny_store, tmp_path / "store"))


def ast_files(store: Path, split: str, folder: Path, seed: int = 0, dim: int | None = None) -> dict[str, np.ndarray]:
    """One <track>.npy per track: the store's own tiny-AST rows (10 per second from 0 s) plus noise, float32;
    dim: keep only the first dim features."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    with open_store(store) as opened:
        for track in opened.tracks(split):
            rows = opened.read_set(split, track, TINY_AUDIO, "audio")["data"].astype(np.float32)[:, :dim]
            written[track] = rows + 0.05 * rng.standard_normal(rows.shape).astype(np.float32)
            np.save(folder / f"{track}.npy", written[track])
    return written


def track_rows(store: Path, split: str) -> dict[str, int]:
    with open_store(store) as opened:
        return {track: attrs["rows"] for track, attrs in opened.track_index(split).items()}


def nothing_written(store: Path, original: Path, split: str = "train") -> None:
    """The store's root attrs and every track's attrs are as in original, and no track has a NAME group."""
    with open_store(store) as after, open_store(original) as before:
        assert after.attrs == before.attrs and NAME not in after.feature_sets()
        assert after.track_index(split) == before.track_index(split)
    assert not any((store / split).glob(f"*/{NAME}"))


def test_an_imported_npy_audio_set_trains_and_predicts_like_an_extracted_one(store, tmp_path):
    for split in ("train", "val"):
        ast_files(store, split, tmp_path / split)
        code, out, err = dva_import(store, split, tmp_path / split, "--rate", "10")
        assert code == 0, err
        assert json.loads(out)["imported"] == sorted(track_rows(store, split))
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", BLOCKED, "fit", "--features", str(store), "--out", str(run), "--audio-features", NAME, "--json", *FIT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["audio_features"] == NAME
    assert set(config["store"]["feature_sets"]) == {TINY_VISUAL, NAME}
    assert config["store"]["feature_sets"][NAME]["encoder"] == {"family": "imported"} and set(config["store"]["feature_sets"][NAME]["sources"]) == {"train", "val"}

    # the test split's features arrive after training: the same set takes them, and predict uses them
    test_files = ast_files(store, "test", tmp_path / "test")
    code, _, err = dva_import(store, "test", tmp_path / "test", "--rate", "10")
    assert code == 0, err
    with open_store(store) as opened:
        for track, rows in test_files.items():
            stored = opened.read_set("test", track, NAME, "audio")
            np.testing.assert_array_equal(stored["data"], rows.astype(np.float16))
            np.testing.assert_allclose(stored["time"], np.arange(rows.shape[0]) / 10, rtol=1e-6)
        sample_rows = opened.split_attrs("test")["sample"]["rows"]
    out = tmp_path / "predictions.txt"
    done = subprocess.run([sys.executable, "-c", BLOCKED, "predict", "--run", str(run), "--features", str(store), "--split", "test", "--out", str(out), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == sample_rows + 1


def test_visual_npz_with_data_and_mask_round_trips_exactly_and_all_nan_rows_are_masked(store, tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "visual"
    folder.mkdir()
    given = {}
    for track, rows in track_rows(store, "train").items():
        data = rng.standard_normal((rows, 24)).astype(np.float16).astype(np.float32)  # exactly representable in the store
        mask = rng.random(rows) > 0.2
        data[rng.random(rows) < 0.1] = np.nan  # no face found: the whole row is NaN
        given[track] = (data, mask)
        np.savez(folder / f"{track}.npz", data=data, mask=mask)
    code, out, err = dva_import(store, "train", folder, modality="visual")
    assert code == 0, err
    with open_store(store) as opened:
        info = opened.feature_sets()[NAME]
        for track, (data, mask) in given.items():
            stored = opened.read_set("train", track, NAME, "visual")
            all_nan = np.isnan(data).all(axis=1)
            assert all_nan.any()
            np.testing.assert_array_equal(stored["mask"], mask & ~all_nan)
            assert stored["data"].dtype == np.float16
            np.testing.assert_array_equal(stored["data"], np.where(all_nan[:, None], 0, data).astype(np.float16))
    digest = hashlib.sha256(b"".join((folder / f"{t}.npz").read_bytes() for t in sorted(given))).hexdigest()
    assert info["modality"] == "visual" and info["dim"] == 24 and info["encoder"] == {"family": "imported"}
    assert info["sources"] == {"train": {"path": str(folder.resolve()), "files": len(given), "sha256": digest}}
    code, shown, _ = dva("info", store)
    line = next(line for line in shown.splitlines() if line.startswith("set") and NAME in line)
    assert "visual" in line and "dim 24" in line and "per frame" in line and f"imported from {folder.resolve()} (train)" in line


def bad_folder(store: Path, folder: Path, how: str) -> tuple[str, list[str]]:
    """Write a folder of train audio or visual files with one kind of mistake; returns (modality, extra flags)."""
    rows = track_rows(store, "train")
    first = sorted(rows)[0]
    folder.mkdir()
    rng = np.random.default_rng(2)
    for track, count in rows.items():
        data = rng.standard_normal((count, 16)).astype(np.float32)
        if how == "rows" and track == first:
            data = data[:-3]
        if how == "two rows" and track in sorted(rows)[:2]:
            data = data[:-1]
        if how == "dim" and track == first:
            data = data[:, :8]
        if how == "partial nan" and track == first:
            data[5, 3] = np.nan
        if how == "mask shape" and track == first:
            np.savez(folder / f"{track}.npz", data=data, mask=np.ones(count - 1, dtype=bool))
            continue
        if how in ("past the end", "no rate"):
            data = data[:20]  # audio rows
        if how == "times decrease":
            np.savez(folder / f"{track}.npz", data=data[:3], time=np.array([0.0, 0.2, 0.1], dtype=np.float32))
            continue
        np.save(folder / f"{track}.npy", data)
    return ("audio", ["--rate", "1"] if how == "past the end" else []) if how in ("past the end", "no rate", "times decrease") else ("visual", [])


@pytest.mark.parametrize(
    "how, message",
    [
        ("rows", "rows, the store's track {first} has {rows} (one per annotation line)"),
        ("two rows", "; and 1 more problems ("),
        ("dim", "{first}.npy: 8 features per row, the other files have 16"),
        ("partial nan", "{first}.npy: 1 rows have NaN in some features but not all"),
        ("mask shape", "{first}.npz: mask must be bool [{rows}]"),
        ("past the end", "{first}.npy: its last row is at 19.00 s, more than 1 s past the last frame of track {first}"),
        ("no rate", ".npy audio file has no times: give --rate HZ"),
        ("times decrease", "{first}.npz: times must be finite and increase"),
    ],
)
def test_a_bad_folder_exits_2_with_one_line_and_writes_nothing(store, tiny_store, tmp_path, how, message):
    modality, flags = bad_folder(store, tmp_path / "bad", how)
    code, _, err = dva_import(store, "train", tmp_path / "bad", *flags, modality=modality)
    rows = track_rows(store, "train")
    first = sorted(rows)[0]
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message.format(first=first, rows=rows[first]) in err
    if how == "rows":
        assert f"{first}.npy: {rows[first] - 3} rows" in err
    nothing_written(store, tiny_store)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--name", ".hidden"], "--name feature-set name '.hidden'"),
        (["--name", "frame_time"], "--name feature-set name 'frame_time'"),
        (["--modality", "text"], "--modality must be visual or audio, not 'text'"),
        (["--modality", "visual", "--rate", "10"], "--rate is for audio sets"),
        (["--rate", "0"], "--rate must be a positive number"),
        (["--split", "dev"], "has no 'dev' split"),
        (["--task", "vad"], "--task vad: unknown task 'vad'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(store, tmp_path, flags, message):
    ast_files(store, "train", tmp_path / "train")
    values = {"--split": "train", "--name": NAME, "--modality": "audio", "--rate": "10"}
    values.update(dict(zip(flags[::2], flags[1::2])))
    code, _, err = dva("import", "--store", store, *[x for pair in values.items() for x in pair], tmp_path / "train")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_files_for_unknown_tracks_and_tracks_without_files_are_named_in_warnings(store, tmp_path):
    folder = tmp_path / "audio"
    files = ast_files(store, "train", folder)
    dropped = sorted(files)[-1]
    (folder / f"{dropped}.npy").unlink()
    np.save(folder / "nosuch_track.npy", np.zeros((5, 64), np.float32))
    (folder / "README.txt").write_text("made with my encoder\n")
    with open_store(store, "a") as opened:  # a track the scan left out: extract recorded it failed, with no frame times
        opened.mark_failed("train", "ghost", "video cannot be opened", [TINY_VISUAL, TINY_AUDIO], {"video": "videos/batch1/ghost.mp4"})
    np.save(folder / "ghost.npy", np.zeros((5, 64), np.float32))
    code, out, err = dva_import(store, "train", folder, "--rate", "10")
    assert code == 0, err
    report = json.loads(out)
    assert report["unknown_files"] == ["nosuch_track.npy"] and report["without_file"] == [dropped]
    assert report["not_extracted"] == {"ghost": "video cannot be opened"}
    assert sorted(report["imported"]) == sorted(set(files) - {dropped})
    warnings = [line for line in err.splitlines() if line.startswith("dva: warning:")]
    assert len(warnings) == 4, err
    assert any("1 files are for tracks `dva extract` could not make" in w and "ghost (video cannot be opened)" in w for w in warnings)
    assert any("1 files name no track of split train in the store, skipped: nosuch_track.npy" in w for w in warnings)
    assert any(f"1 of 5 tracks of train have no file in {folder}, {NAME} stays incomplete for them: {dropped}" in w for w in warnings)
    assert any("README.txt" in w for w in warnings)
    with open_store(store) as opened:
        index = opened.track_index("train")
        assert why_not_usable(index[dropped], [NAME]) == f"incomplete ({NAME})"
        assert all(why_not_usable(index[t], [NAME]) is None for t in report["imported"])
        assert opened.feature_sets()[NAME]["sources"]["train"]["files"] == 4  # ghost.npy is counted: a resumed import has the same digest
    code, shown, _ = dva("info", store)
    assert "rerun `dva import` to finish" in shown


def test_same_name_other_dim_or_modality_is_refused_in_one_line_another_split_is_accepted(store, tmp_path):
    ast_files(store, "train", tmp_path / "train")
    assert dva_import(store, "train", tmp_path / "train", "--rate", "10")[0] == 0
    ast_files(store, "val", tmp_path / "narrow", dim=32)
    code, _, err = dva_import(store, "val", tmp_path / "narrow", "--rate", "10")
    assert code == 2 and "already has a feature set 'my-feats' made otherwise" in err and "dim: 64 != 32" in err and len(err.strip().splitlines()) == 1, err
    ast_files(store, "val", tmp_path / "val")
    code, _, err = dva_import(store, "val", tmp_path / "val", "--rate", "20")
    assert code == 2 and "preprocessing.rate: 10.0 != 20.0" in err, err
    folder = tmp_path / "visual"
    folder.mkdir()
    for track, rows in track_rows(store, "val").items():
        np.save(folder / f"{track}.npy", np.ones((rows, 64), np.float32))
    code, _, err = dva_import(store, "val", folder, modality="visual")
    assert code == 2 and "modality: 'audio' != 'visual'" in err, err
    code, _, err = dva_import(store, "val", folder, modality="visual", name=TINY_VISUAL)  # an extracted set's name
    assert code == 2 and "encoder.family: 'clip' != 'imported'" in err, err

    code, _, err = dva_import(store, "val", tmp_path / "val", "--rate", "10")
    assert code == 0, err
    with open_store(store) as opened:
        info = opened.feature_sets()[NAME]
        assert set(info["sources"]) == {"train", "val"} and info["sources"]["val"]["path"] == str((tmp_path / "val").resolve())
        assert info["rate"] == 10 and info["dim"] == 64
        assert all(NAME in complete_sets(a) for split in ("train", "val") for a in opened.track_index(split).values())


def test_a_second_import_of_a_split_resumes_and_changed_files_need_overwrite(store, tmp_path):
    folder = tmp_path / "audio"
    files = ast_files(store, "train", folder)
    assert dva_import(store, "train", folder, "--rate", "10")[0] == 0
    code, out, err = dva_import(store, "train", folder, "--rate", "10")
    assert code == 0 and json.loads(out)["skipped"] == sorted(files) and not json.loads(out)["imported"], err
    changed = ast_files(store, "train", folder, seed=9)
    code, _, err = dva_import(store, "train", folder, "--rate", "10")
    assert code == 2 and "imported from other files" in err and "--overwrite" in err, err
    code, out, err = dva_import(store, "train", folder, "--rate", "10", "--overwrite")
    assert code == 0 and json.loads(out)["imported"] == sorted(files), err
    with open_store(store) as opened:
        track = sorted(files)[0]
        np.testing.assert_array_equal(opened.read_set("train", track, NAME, "audio")["data"], changed[track].astype(np.float16))


def test_a_track_held_by_another_process_is_skipped_with_a_warning_and_lands_on_rerun(store, tmp_path):
    folder = tmp_path / "audio"
    files = ast_files(store, "train", folder)
    pair = sorted(t for t in files if t.startswith("synth_000_"))  # two subjects of one video: one claim
    with open_store(store, "a") as opened:
        other = claims_for(opened, "train")  # what `dva extract` holds while it writes synth_000's tracks
        assert other.try_claim("synth_000")
        code, out, err = dva_import(store, "train", folder, "--rate", "10")
        assert code == 0, err
        assert sorted(json.loads(out)["held"]) == pair and sorted(json.loads(out)["imported"]) == sorted(set(files) - set(pair))
        assert "re-run `dva import` to add them" in err and all(track in err for track in pair)
        other.release_all()
    code, out, err = dva_import(store, "train", folder, "--rate", "10")
    assert code == 0 and sorted(json.loads(out)["imported"]) == pair, err


def test_audio_npz_with_time_arrays_and_no_sound_lands_in_an_hdf5_store(store, tmp_path):
    h5 = tmp_path / "store.h5"
    assert dva("convert", store, h5)[0] == 0
    folder = tmp_path / "audio"
    folder.mkdir()
    tracks = sorted(track_rows(store, "val"))
    np.savez(folder / f"{tracks[0]}.npz", data=np.zeros((0, 12), np.float32), time=np.zeros(0, np.float32))  # no sound
    np.savez(folder / f"{tracks[1]}.npz", data=np.arange(36, dtype=np.float32).reshape(3, 12), time=np.array([0.25, 1.5, 2.0]))
    code, _, err = dva_import(h5, "val", folder)
    assert code == 0, err
    with open_store(h5) as opened:
        assert opened.feature_sets()[NAME]["preprocessing"] == {"rate": "time arrays"} and "rate" not in opened.feature_sets()[NAME]
        empty, three = (opened.read_set("val", t, NAME, "audio") for t in tracks)
        assert empty["data"].shape == (0, 12) and empty["time"].shape == (0,)
        np.testing.assert_array_equal(three["time"], np.array([0.25, 1.5, 2.0], np.float32))
        np.testing.assert_array_equal(three["data"], np.arange(36).reshape(3, 12).astype(np.float16))
    code, shown, _ = dva("info", h5)
    assert any(NAME in line and "time arrays" in line for line in shown.splitlines())


def visual_files(store: Path, folder: Path, tracks: list[str]) -> None:
    """One <track>.npy of random visual rows per track (as many rows as the store's track, wherever it is stored)."""
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True, exist_ok=True)
    with open_store(store) as opened:
        rows = {t: a["rows"] for split in opened.splits() for t, a in opened.track_index(split).items()}
    for track in tracks:
        np.save(folder / f"{track}.npy", rng.standard_normal((rows[track], 16)).astype(np.float32))


def test_a_split_takes_every_tasks_tracks_of_it_wherever_stored_and_task_narrows_it(store, tmp_path):
    from dva.trainer.loading.store import load_splits

    with open_store(store) as opened:
        of_val = {t: s for task in ("va", "expr", "au") for s, t in opened.task_tracks(task, "val")}  # EXPR/AU val hold VA train tracks
        expr = {split: [t for _, t in opened.task_tracks("expr", split)] for split in ("train", "val")}
    elsewhere = sorted(t for t, s in of_val.items() if s == "train")
    assert elsewhere and "val" in of_val.values()
    missing = sorted(t for t, s in of_val.items() if s == "val" and t not in expr["val"])[0]  # a VA val track, not EXPR's
    visual_files(store, tmp_path / "val", [t for t in of_val if t != missing])
    with open_store(store, "a") as opened:  # `dva extract` writing a train-stored track's video holds train's claim of it
        other = claims_for(opened, "train")
        assert other.try_claim(elsewhere[0])
        code, out, err = dva_import(store, "val", tmp_path / "val", modality="visual")
        other.release_all()
    report = json.loads(out)
    assert code == 0 and report["held"] == [elsewhere[0]] and report["without_file"] == [missing], err
    assert sorted(report["imported"]) == sorted(set(of_val) - {missing, elsewhere[0]})
    assert report["stored"] == {"train": len(elsewhere) - 1, "val": len(of_val) - len(elsewhere) - 1}
    assert f"1 of {len(of_val)} tracks of val have no file" in err
    code, out, err = dva("import", "--store", store, "--split", "val", "--name", NAME, "--modality", "visual", tmp_path / "val")
    assert code == 0 and "val: 1 tracks imported into my-feats (1 stored under train)" in out, err

    # EXPR's train list names only some VA train tracks: the others' files are not of EXPR's train
    with open_store(store) as opened:
        va_train = opened.tracks("train")
    visual_files(store, tmp_path / "train", va_train)
    code, out, err = dva_import(store, "train", tmp_path / "train", "--task", "expr", modality="visual")
    report = json.loads(out)
    assert code == 0 and sorted(report["imported"]) == sorted(expr["train"]) and report["tasks"] == ["expr"], err
    assert report["unknown_files"] == [f"{t}.npy" for t in va_train if t not in expr["train"]]
    assert "files name no track of split train (expr) in the store" in err
    with open_store(store) as opened:  # what `dva fit --task expr --visual-features NAME` loads: the set is complete on all of it
        pooled, _ = load_splits(opened, ["train", "val"], {"visual": [NAME], "audio": [TINY_AUDIO]}, task="expr")
        assert sorted(pooled.tracks) == sorted(expr["train"] + expr["val"]) and not pooled.left_out
        assert opened.feature_sets()[NAME]["sources"]["train/expr"]["tasks"] == ["expr"] and "val" in opened.feature_sets()[NAME]["sources"]


def test_a_store_without_tasks_imports_the_tracks_stored_under_the_split(store, tmp_path):
    import zarr

    root = zarr.open_group(str(store), mode="r+")
    for split in ("train", "val", "test"):
        for _, group in root[split].groups():
            attrs = dict(group.attrs)
            group.attrs.clear()
            group.attrs.update({k: v for k, v in attrs.items() if k != "tasks"})
    with open_store(store) as opened:
        stored = {split: opened.tracks(split) for split in ("train", "val")}
    visual_files(store, tmp_path / "files", stored["train"] + stored["val"])
    code, out, err = dva_import(store, "val", tmp_path / "files", modality="visual")
    report = json.loads(out)
    assert code == 0 and sorted(report["imported"]) == stored["val"] and report["stored"] == {"val": len(stored["val"])}, err
    assert sorted(report["unknown_files"]) == [f"{t}.npy" for t in stored["train"]]
    code, _, err = dva_import(store, "val", tmp_path / "files", "--task", "expr", modality="visual")
    assert code == 2 and "names a track of split val (expr)" in err and len(err.strip().splitlines()) == 1, err
