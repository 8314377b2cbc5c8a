"""VA a person can read: `dva predict --split all --format csv` per track, and `dva predict --video FILE --run RUN` in one
command (faces by real dlib on real recordings, the run's tiny feature sets rebuilt from its provenance, offline)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app
from tests.conftest import TINY_AUDIO, TINY_VISUAL

pytest.importorskip("dlib", reason="the face stage needs dva[faces]")

HEADER = "frame,time,valence,arousal,face"


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _rows(path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    return [line.split(",") for line in lines[1:]]


@pytest.fixture(scope="module")
def people_store(people, people_crops, tmp_path_factory):
    """The people folder with its crops inside (as `dva faces --data` without --out writes them), extracted (tiny, split all)."""
    data = tmp_path_factory.mktemp("people-data") / "data"
    shutil.copytree(people, data)
    shutil.copytree(people_crops / "cropped_aligned", data / "cropped_aligned")
    store = data.parent / "store"
    done = _invoke("extract", "--data", data, "--split", "all", "--preset", "tiny", "--device", "cpu", "--out", store, "--json")
    assert done.exit_code == 0, done.output
    return store


def test_csv_has_a_row_per_frame_with_its_time_and_whether_a_face_was_there(run_dir, people_store, tmp_path):
    from dva.stores import open_store

    done = _invoke("predict", "--run", run_dir[0], "--features", people_store, "--split", "all", "--format", "csv", "--out", tmp_path)
    assert done.exit_code == 0, done.output
    with open_store(str(people_store), mode="r") as store:
        for track, faces in (("talking", 1), ("no face", 0)):
            rows, frame_time = _rows(tmp_path / f"{track}.csv"), store.read("all", track, "frame_time")
            assert [int(r[0]) for r in rows] == list(range(1, len(frame_time) + 1))  # 1-based, as the crops
            assert np.allclose([float(r[1]) for r in rows], frame_time, atol=1e-4)
            values = np.array([[float(r[2]), float(r[3])] for r in rows])
            assert np.isfinite(values).all() and (np.abs(values) <= 1).all() and values.std(axis=0).min() > 0
            assert {r[4] for r in rows} == {str(faces)}
            assert np.array_equal([r[4] == "1" for r in rows], store.read("all", track, f"{TINY_VISUAL}/mask"))


def test_predict_video_writes_a_csv_row_per_decoded_frame_and_a_png_in_one_command(run_dir, people, synth_data, tmp_path):
    import decord

    run, out = run_dir[0], tmp_path / "out"
    done = _invoke("predict", "--video", people / "talking.mp4", people / "no face.mp4", "--run", run, "--out", out)
    assert done.exit_code == 0, done.output
    assert "dva: warning: " in done.stderr and "no face.mp4: no face found" in done.stderr
    assert f"{TINY_VISUAL}: crops framed release (learned from " in done.stdout  # the run's set recorded the framing of its release's crops
    for track in ("talking", "no face"):
        rows = _rows(out / f"{track}.csv")
        assert len(rows) == len(decord.VideoReader(str(people / f"{track}.mp4")))
        assert (out / f"{track}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r[4] for r in _rows(out / "talking.csv")} == {"1"} and {r[4] for r in _rows(out / "no face.csv")} == {"0"}
    # the same sets as `dva faces` (framed as the run's release: --framing-from it) + `dva extract` + `dva predict --format csv` by hand: the same traces
    by_hand = tmp_path / "by-hand-data"
    shutil.copytree(people, by_hand)
    for args in (["faces", "--data", by_hand, "--framing-from", synth_data],
                 ["extract", "--data", by_hand, "--split", "all", "--preset", "tiny", "--device", "cpu", "--out", tmp_path / "by-hand-store"],
                 ["predict", "--run", run, "--features", tmp_path / "by-hand-store", "--split", "all", "--format", "csv", "--out", tmp_path / "by-hand"]):
        made = _invoke(*args)
        assert made.exit_code == 0 and "framed" not in made.stderr, made.output  # no framing warning: the crops are framed alike
    assert (out / "talking.csv").read_text() == (tmp_path / "by-hand" / "talking.csv").read_text()
    record, store = out / ".dva-work" / "data" / "cropped_aligned" / "talking.faces.json", out / ".dva-work" / "store"
    before = record.stat().st_mtime_ns, _done_at(store)
    again = _invoke("predict", "--video", people / "talking.mp4", people / "no face.mp4", "--run", run, "--out", out, "--json")
    assert again.exit_code == 0 and (record.stat().st_mtime_ns, _done_at(store)) == before  # resumed from the work folder: nothing redone
    assert (out / "talking.csv").read_text() == (tmp_path / "by-hand" / "talking.csv").read_text()


def _done_at(store) -> dict:
    from dva.stores import open_store

    with open_store(str(store), mode="r") as opened:
        return opened.track_state("all", "talking")["done_at"]


def test_folds_as_an_ensemble_and_an_unreadable_video_is_one_failed_line_while_the_rest_lands(folds_dir, people, tmp_path):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all")
    done = _invoke("predict", "--video", people / "talking.mp4", broken, "--run", folds_dir[0], "--out", tmp_path / "out")
    assert done.exit_code == 1, done.output
    failed = [line for line in done.stderr.splitlines() if line.startswith("dva: failed:")]
    assert len(failed) == 1 and failed[0].startswith(f"dva: failed: {broken}: ") and ".dva-work" not in failed[0] and "Traceback" not in done.output
    assert len(_rows(tmp_path / "out" / "talking.csv")) == 120 and (tmp_path / "out" / "talking.png").is_file()
    assert not (tmp_path / "out" / "broken.csv").exists()


def _edited_run(run, tmp_path, edit):
    """A copy of a run whose checkpoint's recorded provenance is edited (standing in for a run trained on other
    features: fitting one on an imported set or other weights would take a fit of its own)."""
    copy = tmp_path / f"run-{edit.__name__}"
    shutil.copytree(run, copy)
    checkpoint = torch.load(copy / "best.pt", weights_only=True)
    edit(checkpoint["provenance"]["feature_sets"])
    torch.save(checkpoint, copy / "best.pt")
    return copy


def test_a_run_trained_on_crops_of_no_recorded_framing_is_warned_about(run_dir, people, tmp_path):
    def no_framing_and_other_weights(sets):  # other weights too: the warning comes before the refusal, and nothing is extracted
        sets[TINY_VISUAL]["preprocessing"].pop("framing")
        sets[TINY_VISUAL]["encoder"]["weights_sha256"] = "0" * 64

    done = _invoke("predict", "--video", people / "talking.mp4", "--run", _edited_run(run_dir[0], tmp_path, no_framing_and_other_weights), "--out", tmp_path / "out")
    assert done.exit_code == 2 and f"dva: warning: feature set {TINY_VISUAL!r} recorded no framing of the crops it was made from" in done.stderr, done.stderr


def test_predicting_from_crops_framed_otherwise_than_the_runs_warns(run_dir, people_store, tmp_path):
    done = _invoke("predict", "--run", run_dir[0], "--features", people_store, "--split", "all", "--format", "csv", "--out", tmp_path)
    assert done.exit_code == 0, done.output  # the run's crops were framed as its release's (learned), these by dlib: a warning, not a refusal
    assert f"dva: warning: feature set {TINY_VISUAL!r}: the run was trained on crops framed release, {people_store}'s dlib" in done.stderr, done.stderr


def test_a_run_whose_sets_cannot_be_rebuilt_is_refused_in_one_line(run_dir, people, tmp_path):
    def imported(sets):
        sets[TINY_VISUAL]["encoder"] = {"family": "imported"}

    def other_weights(sets):
        sets[TINY_VISUAL]["encoder"]["weights_sha256"] = "0" * 64

    video = people / "talking.mp4"
    cases = [
        (_edited_run(run_dir[0], tmp_path, imported), f"feature set {TINY_VISUAL!r} was imported (dva import), not made by an encoder: it cannot be rebuilt from a video"),
        (_edited_run(run_dir[0], tmp_path, other_weights), f"feature set {TINY_VISUAL!r} cannot be made again the same way here (recorded != rebuilt: encoder.weights_sha256: '000"),
    ]
    for run, message in cases:
        done = _invoke("predict", "--video", video, "--run", run, "--out", tmp_path / "out")
        assert done.exit_code == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not list((tmp_path / "out").glob("*.csv"))
    other = tmp_path / "other" / "talking.mkv"
    other.parent.mkdir()
    shutil.copy(video, other)
    for args, message in (([video, other], f"two videos are both called 'talking': {video} and {other}"), ([tmp_path / "gone.mp4"], "gone.mp4: no such video file")):
        done = _invoke("predict", "--video", *args, "--run", run_dir[0], "--out", tmp_path / "out")
        assert done.exit_code == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_run_on_a_timm_set_predicts_a_video_with_the_timm_encoder_rebuilt(run_dir, people, tmp_path):
    """A run whose visual set the tiny timm family made from decoded frames (its record edited in, as above: 64-d rows
    like the run's own; fitting one would take a fit of its own): `predict --video` rebuilds that encoder, extracts
    with it and predicts. Frames, not faces: the face stage is tested above and would triple this test's time."""
    import decord

    from dva.pipeline.encoders import PRESETS, build_visual
    from dva.stores import open_store

    encoder = build_visual("timm", PRESETS["tiny"]["timm_model"])

    def timm_set(sets):
        assert sets[TINY_VISUAL]["dim"] == encoder.dim
        sets[TINY_VISUAL]["encoder"] = encoder.provenance()
        sets[TINY_VISUAL]["preprocessing"]["visual_source"] = "video"

    out = tmp_path / "out"
    done = _invoke("predict", "--video", people / "talking.mp4", "--run", _edited_run(run_dir[0], tmp_path, timm_set), "--out", out)
    assert done.exit_code == 0, done.output
    assert len(_rows(out / "talking.csv")) == 120 and (out / "talking.png").is_file()
    with open_store(str(out / ".dva-work" / "store"), mode="r") as made:
        assert made.feature_sets()[TINY_VISUAL]["encoder"] == encoder.provenance()
        rows = made.read("all", "talking", f"{TINY_VISUAL}/data")
    frames = torch.from_numpy(decord.VideoReader(str(people / "talking.mp4")).get_batch([0, 60]).asnumpy()).permute(0, 3, 1, 2)
    expected = encoder.encode(encoder.preprocess(frames)).numpy()
    np.testing.assert_allclose(rows[[0, 60]].astype(np.float32), expected, rtol=2e-3, atol=1e-5)  # timm's features (float16 in the store)


def test_runs_of_three_tasks_predict_a_video_into_one_csv_per_track_with_every_tasks_columns(run_dir, task_runs, people, tmp_path):
    import json

    from dva.data.tasks import AU_NAMES, EXPR_CLASSES

    out, expr_run, au_run = tmp_path / "out", task_runs["expr"][0], task_runs["au"][0]
    done = _invoke("predict", "--video", people / "talking.mp4", "--run", au_run, "--run", run_dir[0], "--run", expr_run, "--out", out, "--smooth", "0", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["tasks"] == ["va", "expr", "au"] and list(report["tracks"]) == ["talking"]
    smoothing = report["prediction"]["tasks"]
    assert smoothing["va"]["smoothing"] == "--smooth" and smoothing["expr"]["smoothing"] == smoothing["au"]["smoothing"] == "chosen by dva fit on held-out tracks"
    lines = (out / "talking.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header == ["frame", "time", "valence", "arousal", *EXPR_CLASSES, "expression", *AU_NAMES, *(f"{au}_on" for au in AU_NAMES), "face"]
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert len(rows) == 120 and [int(r["frame"]) for r in rows] == list(range(1, 121)) and {r["face"] for r in rows} == {"1"}
    expr = np.array([[float(r[name]) for name in EXPR_CLASSES] for r in rows])
    assert np.allclose(expr.sum(axis=1), 1, atol=1e-5) and expr.std(axis=0).max() > 0
    assert [r["expression"] for r in rows] == [EXPR_CLASSES[k] for k in expr.argmax(axis=1)]
    au = np.array([[float(r[name]) for name in AU_NAMES] for r in rows])
    thresholds = json.loads((au_run / "metrics.json").read_text())["thresholds"]
    assert ((au >= 0) & (au <= 1)).all() and au.std(axis=0).max() > 0
    assert np.array_equal([[r[f"{name}_on"] == "1" for name in AU_NAMES] for r in rows], au >= np.array([thresholds[name] for name in AU_NAMES]))
    # VA's columns are VA's alone: the same run on the work store by itself, as `dva predict --format csv` writes them
    alone = _invoke("predict", "--run", run_dir[0], "--features", out / ".dva-work" / "store", "--split", "all", "--format", "csv", "--smooth", "0", "--out", tmp_path / "va")
    assert alone.exit_code == 0, alone.output
    assert [[r["valence"], r["arousal"]] for r in rows] == [r[2:4] for r in _rows(tmp_path / "va" / "talking.csv")]
    assert (out / "talking.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_whose_shared_set_was_made_otherwise_are_refused_before_any_work_in_one_line(run_dir, task_runs, people, tmp_path):
    def other_hop(sets):
        sets[TINY_AUDIO]["preprocessing"]["hop_seconds"] = 0.5

    done = _invoke("predict", "--video", people / "talking.mp4", "--run", run_dir[0], "--run", _edited_run(task_runs["expr"][0], tmp_path, other_hop), "--out", tmp_path / "out")
    assert done.exit_code == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"were trained on different features: feature set {TINY_AUDIO!r} differs (preprocessing.hop_seconds" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def _sound_alone(path, seconds: float, hz: float, hole: tuple[float, float] | None = None):
    """A recording of sound alone through PyAV: .wav (16-bit PCM) or .m4a (AAC), a 44.1 kHz tone; hole (a, b): the
    packets starting in [a, b) s left out (the rest keep their timestamps), as a dropped capture leaves them."""
    import av

    rate = 44100
    wave = (0.3 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le" if path.suffix == ".wav" else "aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, wave.shape[0], 1024):
            chunk = wave[None, start : start + 1024]
            frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                if not (hole and hole[0] <= float(packet.pts * packet.time_base) < hole[1]):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_a_recording_of_sound_alone_is_predicted_from_its_sound_on_a_30_fps_clock(run_dir, tmp_path):
    speech, voice = _sound_alone(tmp_path / "speech.wav", 3.0, 440.0), _sound_alone(tmp_path / "voice.m4a", 2.0, 220.0)
    done = _invoke("predict", "--video", speech, voice, "--run", run_dir[0], "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    for path, seconds in ((speech, 3.0), (voice, 2.0)):
        assert f"{path}: no video stream, predicted from its sound" in done.stderr
        rows = _rows(tmp_path / "out" / f"{path.stem}.csv")
        assert len(rows) == round(seconds * 30) and {r[4] for r in rows} == {"0"}
        assert np.allclose([float(r[1]) for r in rows], np.arange(len(rows)) / 30, atol=1e-4)
        values = np.array([[float(r[2]), float(r[3])] for r in rows])
        assert np.isfinite(values).all() and (np.abs(values) <= 1).all()
        assert (tmp_path / "out" / f"{path.stem}.png").is_file()
    from dva.stores import open_store

    with open_store(str(tmp_path / "out" / ".dva-work" / "store"), mode="r") as store:
        for path, seconds in ((speech, 3.0), (voice, 2.0)):  # the sound was encoded, over the whole recording
            audio_time = store.read("all", path.stem, f"{TINY_AUDIO}/time")
            assert audio_time.shape[0] > 0 and audio_time[0] < 0.5 and audio_time[-1] > seconds - 1.0


def test_a_hole_in_a_recordings_sound_timestamps_is_silence_of_its_length_named_in_one_warning(run_dir, tmp_path):
    voice = _sound_alone(tmp_path / "voice.m4a", 3.0, 220.0, hole=(1.0, 1.5))  # 44.1 kHz AAC packets of 23 ms: 1.022 to 1.509 s left out
    done = _invoke("predict", "--video", voice, "--run", run_dir[0], "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    warned = [line for line in done.stderr.splitlines() if "in the audio timestamps" in line]
    assert len(warned) == 1 and warned[0].startswith(f"dva: warning: {voice}: 1 hole in the audio timestamps (0.488 s at 1.022 s;"), done.stderr
    assert len(_rows(tmp_path / "out" / "voice.csv")) == 90  # the whole 3 s on the 30 fps clock (end to end: 2.5 s)
