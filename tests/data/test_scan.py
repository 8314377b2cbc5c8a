import json

import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.data.aff_wild2 import scan
from dva.errors import DataError
from tests.conftest import write_annotation, write_video


def test_scan_reads_every_quirk_of_a_release(tmp_path):
    """Older release naming: batch1/ and new_vids/ at the top, annotations/VA_Set, lower-case folders."""
    write_video(tmp_path / "batch1" / "12-30-640x360.mp4", frames=40, fps=25)  # the name lies about fps
    write_video(tmp_path / "new_vids" / "duo.avi", frames=30, fps=24)
    write_video(tmp_path / "batch1" / "quiet.mp4", frames=20, fps=30, audio=False)
    labels = tmp_path / "annotations" / "VA_Set"
    write_annotation(labels / "Train_Set" / "12-30-640x360.txt", lines=43)  # 3 more lines than frames
    write_annotation(labels / "Train_Set" / "duo_left.txt", lines=26)
    write_annotation(labels / "Train_Set" / "duo_right.txt", lines=30)
    write_annotation(labels / "Validation_Set" / "quiet.txt", lines=20)
    write_annotation(labels / "Validation_Set" / "ghost.txt", lines=5)  # no video
    bad = write_annotation(labels / "Train_Set" / "quiet.txt", lines=20)
    bad.write_text(bad.read_text() + "0.2;0.1\n")
    (tmp_path / "cropped_aligned" / "duo_left").mkdir(parents=True)
    (labels / "va_test_set.txt").write_text("quiet\n")

    result = scan(tmp_path)
    tracks = {t.track: t for t in result.tracks if t.split != "test"}
    assert set(tracks) == {"12-30-640x360", "duo_left", "duo_right", "quiet"}
    main = tracks["12-30-640x360"]
    assert main.record() == {
        "track": "12-30-640x360", "split": "train", "video": "batch1/12-30-640x360.mp4", "subject": None,
        "n_frames": 43, "n_valid": 43, "fps": pytest.approx(25.0), "has_audio": True, "frames_dir": None,
    }
    assert main.n_video_frames == 40
    assert tracks["duo_left"].subject == "left" and tracks["duo_right"].subject == "right"
    assert tracks["duo_left"].video == "new_vids/duo.avi" and tracks["duo_left"].fps == pytest.approx(24.0)
    assert tracks["duo_left"].frames_dir == "cropped_aligned/duo_left" and tracks["duo_right"].frames_dir is None
    assert tracks["quiet"].split == "val" and tracks["quiet"].has_audio is False
    reasons = {p.track: p.reason for p in result.problems}
    assert "no video" in reasons["ghost"]
    assert "Train_Set/quiet.txt:22" in reasons["quiet"]
    test = scan(tmp_path, split="test").tracks
    assert [(t.track, t.split, t.n_frames, t.n_valid) for t in test] == [("quiet", "test", None, None)]


def test_scan_leaves_out_an_undecodable_video(tmp_path):
    write_video(tmp_path / "videos" / "batch1" / "good.mp4", frames=10)
    (tmp_path / "videos" / "batch2").mkdir(parents=True)
    (tmp_path / "videos" / "batch2" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    for name in ("good", "broken"):
        write_annotation(tmp_path / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / f"{name}.txt", lines=10)
    result = scan(tmp_path, split="train")
    assert [t.track for t in result.tracks] == ["good"]
    assert result.problems[0].track == "broken" and "broken.mp4" in result.problems[0].reason


def test_missing_split_folder_is_a_data_error(tmp_path):
    write_video(tmp_path / "videos" / "batch1" / "a.mp4", frames=5)
    write_annotation(tmp_path / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "a.txt", lines=5)
    with pytest.raises(DataError, match="Validation_Set"):
        scan(tmp_path, split="val")


def test_scan_of_synthetic_dataset_matches_what_synth_wrote(synth_data):
    records = [json.loads(line) for line in CliRunner().invoke(app, ["scan", str(synth_data), "--json"]).stdout.splitlines()]
    assert {r["split"] for r in records} == {"train", "val", "test"}
    assert all(set(r) == {"track", "split", "video", "subject", "n_frames", "n_valid", "fps", "has_audio", "frames_dir"} for r in records)
    assert {r["subject"] for r in records} >= {"left", "right", None}
    assert any(not r["has_audio"] for r in records)
    assert any(r["video"].endswith(".avi") for r in records)
    assert any(abs(r["fps"] - 30) > 0.5 for r in records)
    assert any(r["n_valid"] is not None and r["n_valid"] < r["n_frames"] for r in records)  # -5 runs
    test = [r for r in records if r["split"] == "test"]  # T from the organisers' sample file, not the decoded count
    assert all(r["n_frames"] is not None and r["n_valid"] is None for r in test)
    table = CliRunner().invoke(app, ["scan", str(synth_data)]).stdout
    assert "train:" in table and "without audio" in table
