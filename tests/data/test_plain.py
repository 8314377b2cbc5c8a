"""A folder of plain videos is a dataset of one unlabelled split, `all`: scanned and extracted as a release is,
its faces from `dva faces` (real dlib on real recordings: tests/conftest.py `people`, `people_crops`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from dva.cli import app
from tests.conftest import TINY_AUDIO, TINY_VISUAL, real_clip

pytest.importorskip("dlib", reason="the face stage needs dva[faces]")


def _scan(*args) -> list[dict]:
    result = CliRunner().invoke(app, ["scan", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_folder_of_videos_is_one_split_all_named_by_file_with_decoded_frame_counts(people, people_crops):
    records = {r["track"]: r for r in _scan(people, "--crops", people_crops)}
    assert set(records) == {"talking", "no face"}
    talking = records["talking"]
    assert talking == {"track": "talking", "split": "all", "video": "talking.mp4", "subject": None, "n_frames": 120, "n_valid": None,
                       "fps": pytest.approx(25.0), "has_audio": True, "frames_dir": str(people_crops.resolve() / "cropped_aligned" / "talking")}
    assert records["no face"]["n_frames"] == 50 and records["no face"]["video"] == "no face.mp4"
    assert {r["frames_dir"] for r in _scan(people, "--split", "all")} == {None}  # no crops of its own: whole frames
    table = CliRunner().invoke(app, ["scan", str(people)]).stdout
    assert "all: 2 tracks" in table


def test_two_people_are_a_left_and_a_right_track_as_the_faces_record_says(tmp_path):
    from dva.data.synth import write_video
    from dva.faces import FaceSettings, run_faces

    carphone = real_clip("carphone_pristine")[:40]
    data = tmp_path / "duo"
    write_video(data / "duo.mp4", np.concatenate([carphone, carphone[:, :, ::-1]], axis=2), 25)
    run_faces(data, FaceSettings(subjects=2), progress=False)
    (data / "cropped_aligned" / "duo").mkdir()  # a stray folder of the track's bare name: the record decides, not folders
    records = _scan(data)
    assert [(r["track"], r["subject"], r["video"], r["frames_dir"]) for r in records] == [
        ("duo_left", "left", "duo.mp4", "cropped_aligned/duo_left"), ("duo_right", "right", "duo.mp4", "cropped_aligned/duo_right")]


def test_two_videos_of_one_name_and_a_split_of_the_other_kind_are_one_line_errors(people, synth_data, tmp_path):
    data = tmp_path / "mine"
    shutil.copytree(people, data)
    (data / "later").mkdir()
    shutil.copy(people / "talking.mp4", data / "later" / "talking.mkv")
    cases = [
        (["scan", str(data)], "two videos are both called 'talking': later/talking.mkv and talking.mp4"),
        (["scan", str(people), "--split", "train"], "so it is a folder of plain videos: one unlabelled split, pass --split all"),
        (["scan", str(synth_data), "--split", "all"], "is an Aff-Wild2 release (it has Annotations/): its splits are train, val, test"),
        (["scan", str(people), "--crops", str(tmp_path)], "no cropped_aligned/ in it (make one with dva faces"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_extract_all_reads_the_crops_and_a_video_without_a_face_extracts_from_sound(people, people_crops, tmp_path):
    from dva.stores import open_store

    out = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", "--data", str(people), "--split", "all", "--crops", str(people_crops), "--preset", "tiny",
                                      "--device", "cpu", "--batch-size", "32", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert "dva: warning: no face.mp4: no face found by dva faces, every visual row of no face masked" in result.stderr
    with open_store(str(out), mode="r") as store:
        assert store.feature_sets()[TINY_VISUAL]["preprocessing"]["crops"]["faces"]["size"] == 112
        for track, frames, faces in (("talking", 120, 120), ("no face", 50, 0)):
            arrays = store.read_track("all", track, [TINY_VISUAL, TINY_AUDIO])
            assert arrays["frame_time"].shape == (frames,) and "labels" not in arrays
            assert int(arrays[f"{TINY_VISUAL}/mask"].sum()) == faces
            assert arrays[f"{TINY_AUDIO}/data"].shape[0] > 0 and np.isfinite(arrays[f"{TINY_AUDIO}/data"].astype(np.float32)).all()
