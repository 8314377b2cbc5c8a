"""`dva extract` end to end on the synthetic dataset with --preset tiny (real decord, open_clip, AST, zarr)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dva.data.aff_wild2 import scan
from dva.pipeline.extract import run_extract
from dva.stores import open_store
from tests.conftest import (
    SLOWED,
    TINY_AUDIO,
    TINY_VISUAL,
    WAV2VEC2,
    assert_stores_equal,
    by_modality,
    run_cli,
    tiny_settings,
)

DVA = [sys.executable, "-m", "dva.cli"]  # where the separate process is what is tested (a cluster, a kill, two at once); run_cli elsewhere
TINY = ["--preset", "tiny", "--device", "cpu", "--batch-size", "32"]
VISUAL, AUDIO = TINY_VISUAL, TINY_AUDIO


def test_stores_equal_sees_a_missing_array_a_missing_set_and_other_provenance(tiny_store, tmp_path):
    """The comparison every resume / Dask / HDF5 / shard test relies on fails on what it claims to compare."""
    assert_stores_equal(tiny_store, tiny_store, "val")
    track = open_store(tiny_store).tracks("val")[0]
    no_labels, no_set, other = (tmp_path / name for name in ("no-labels", "no-set", "other"))
    for copy in (no_labels, no_set, other):
        shutil.copytree(tiny_store, copy)
    shutil.rmtree(no_labels / "val" / track / "labels")  # one array gone, the track still complete
    import zarr  # edited with zarr itself, not through dva's store

    root = zarr.open_group(str(no_set), mode="r+")
    root.attrs["feature_sets"] = {k: v for k, v in root.attrs["feature_sets"].items() if k != AUDIO}
    for name in open_store(tiny_store).tracks("val"):  # one set gone from the store: provenance, every track's arrays and marks
        shutil.rmtree(no_set / "val" / name / AUDIO)
        group = zarr.open_group(str(no_set / "val" / name), mode="r+")
        group.attrs.update({key: {k: v for k, v in group.attrs[key].items() if k != AUDIO} for key in ("complete", "done_at", "set_rows")})
    root = zarr.open_group(str(other), mode="r+")  # same arrays, another model recorded
    sets = dict(root.attrs["feature_sets"])
    sets[VISUAL] = {**sets[VISUAL], "encoder": {**sets[VISUAL]["encoder"], "model": "another"}}
    root.attrs["feature_sets"] = sets
    for broken, message in ((no_labels, "labels"), (no_set, "feature sets"), (other, "provenance")):
        with pytest.raises(AssertionError, match=message):
            assert_stores_equal(broken, tiny_store, "val")
        with pytest.raises(AssertionError):
            assert_stores_equal(tiny_store, broken, "val")


def test_every_track_lands_with_the_right_shapes_masks_and_labels(synth_data, tiny_store):
    store = open_store(tiny_store)
    sets = store.feature_sets()
    assert set(sets) == {VISUAL, AUDIO} and store.attrs["format"] == 2
    assert sets[VISUAL]["encoder"]["model"] == "dva-tiny-clip" and sets[AUDIO]["encoder"]["weights_sha256"]
    assert sets[VISUAL]["preprocessing"]["visual_source"] == "crops" and sets[AUDIO]["modality"] == "audio"
    for split in ("train", "val", "test"):
        tracks = scan(synth_data, split=split, tasks=("va",)).tracks  # VA's split: the store split its tracks land in
        assert sorted(store.tracks(split)) == sorted(t.track for t in tracks)
        for track in tracks:
            arrays = by_modality(store, split, track.track)
            rows = track.n_frames if track.n_frames is not None else track.n_video_frames
            assert arrays["visual"].shape[0] == rows and arrays["visual"].dtype == np.float16
            assert arrays["visual_mask"].shape == (rows,) and arrays["frame_time"].shape == (rows,)
            np.testing.assert_allclose(arrays["frame_time"][1] - arrays["frame_time"][0], 1 / track.fps, rtol=1e-4)
            crops = sorted((synth_data / track.frames_dir).glob("*.jpg"))
            expected_mask = np.zeros(rows, dtype=bool)
            for crop in crops:
                row = int(crop.stem) - 1
                if row < min(rows, track.n_video_frames):
                    expected_mask[row] = True
            np.testing.assert_array_equal(arrays["visual_mask"], expected_mask)  # gaps and rows past the video's end
            assert not arrays["visual"][~arrays["visual_mask"]].any()
            if split == "test":
                assert "labels" not in arrays
            else:
                labels = arrays["labels"]
                assert labels.shape == (rows, 2)
                assert int((~np.isnan(labels).any(axis=1)).sum()) == track.n_valid
            if track.has_audio:
                assert arrays["audio"].shape[0] > 0 and np.all(np.diff(arrays["audio_time"]) > 0)
                assert arrays["audio_time"][-1] <= track.n_video_frames / track.fps + 0.2
            else:
                assert arrays["audio"].shape[0] == 0 and arrays["audio_time"].shape == (0,)


def test_rerun_skips_complete_tracks_and_a_set_name_with_other_settings_is_refused(synth_data, tiny_store):
    report = run_extract(tiny_settings(synth_data, "val", tiny_store))
    assert report.extracted == [] and report.skipped and not report.failed
    same_name = ["--only", "audio", "--name", AUDIO, "--audio-mode", "tokens"]
    done = run_cli("extract", "--data", str(synth_data), "--split", "val", "--out", str(tiny_store), *TINY, *same_name)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "encoder.mode" in done.stderr and "'window' != 'tokens'" in done.stderr and AUDIO in done.stderr
    lonely = run_cli("extract", "--data", str(synth_data), "--split", "val", "--out", str(tiny_store), *TINY, "--name", "x")
    assert lonely.returncode == 2 and "--only" in lonely.stderr


def _edit_set_record(store_path: Path, name: str, edit) -> None:
    store = open_store(str(store_path), mode="a")
    try:
        sets = store.feature_sets()
        edit(sets[name]["preprocessing"])
        store.set_attrs({"feature_sets": sets})
    finally:
        store.close()


def test_a_set_begun_on_another_device_is_refused_unless_allowed_and_an_old_record_counts_as_cpu(synth_data, tmp_path):
    from dva.errors import StoreError

    out = tmp_path / "s"
    settings = tiny_settings(synth_data, "val", out, only="visual")
    assert run_extract(settings).extracted
    recorded = open_store(str(out), mode="r").feature_sets()[VISUAL]["preprocessing"]
    assert (recorded["device"], recorded["compute_dtype"]) == ("cpu", "float32")
    _edit_set_record(out, VISUAL, lambda p: p.update(device="cuda", compute_dtype="bfloat16"))  # as a GPU run records it
    with pytest.raises(StoreError, match=r"preprocessing\.compute_dtype: 'bfloat16' != 'float32'.*preprocessing\.device: 'cuda' != 'cpu'.*--allow-other-device"):
        run_extract(settings)
    allowed = run_extract(tiny_settings(synth_data, "val", out, only="visual", allow_other_device=True))
    assert allowed.skipped and any("begun otherwise" in w and "'cuda' != 'cpu'" in w for w in allowed.warnings)
    _edit_set_record(out, VISUAL, lambda p: [p.pop(k) for k in ("device", "compute_dtype")])  # a store of dva before the record
    again = run_extract(settings)
    assert again.skipped and not again.extracted and not any("begun otherwise" in w for w in again.warnings)


def _set_checksums(store_path: Path, split: str, names) -> dict[str, str]:
    """sha256 of every file of these sets' arrays and of the tracks' own arrays (their bytes on disk), by relative path."""
    import hashlib

    sums = {}
    for track_dir in sorted((store_path / split).iterdir()):
        for part in (*names, "frame_time", "labels"):
            for path in sorted((track_dir / part).rglob("*")) if (track_dir / part).exists() else []:
                if path.is_file():
                    sums[str(path.relative_to(store_path))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def test_a_second_encoder_adds_a_set_and_never_rewrites_the_first(synth_data, tiny_store, two_audio_store):
    for split in ("train", "val"):  # the copy got a second audio set; the first run's files are byte for byte the same
        before = _set_checksums(tiny_store, split, [VISUAL, AUDIO])
        assert _set_checksums(two_audio_store, split, [VISUAL, AUDIO]) == before and len(before) > 20
    store = open_store(two_audio_store)
    assert set(store.feature_sets()) == {VISUAL, AUDIO, WAV2VEC2} and store.feature_sets()[WAV2VEC2]["encoder"]["family"] == "wav2vec2"
    info = store.summary()["splits"]["val"]["sets"]
    assert info[WAV2VEC2]["complete"] == info[VISUAL]["complete"] == len(store.tracks("val"))
    assert store.summary()["splits"]["test"]["sets"][WAV2VEC2]["complete"] == 0  # test was not extracted with it
    assert_stores_equal(two_audio_store, tiny_store, "val", ignore_sets={WAV2VEC2})  # the rest of the store is equal
    again = run_extract(tiny_settings(synth_data, "val", two_audio_store, only="audio", audio_encoder="wav2vec2", wav2vec2_model="dva-tiny-wav2vec2"))
    assert again.extracted == [] and again.skipped  # the same encoder resumes


def test_only_visual_makes_one_set_and_reads_no_sound(synth_data, tmp_path, monkeypatch):
    import dva.pipeline.stream as stream

    monkeypatch.setattr(stream, "read_audio", lambda track, root: pytest.fail("--only visual decoded audio"))
    report = run_extract(tiny_settings(synth_data, "val", tmp_path / "v", only="visual", name="faces"))
    store = open_store(tmp_path / "v")
    assert not report.failed and list(store.feature_sets()) == ["faces"]
    track = store.tracks("val")[0]
    assert set(store.read_track("val", track)) == {"frame_time", "labels", "faces/data", "faces/mask"}


def test_corrupt_jpeg_is_masked_garbage_video_isolated_rest_lands(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    tracks = scan(data, split="train").tracks
    victim, broken = tracks[0], tracks[-1]
    crop = sorted((data / victim.frames_dir).glob("*.jpg"))[3]
    crop.write_bytes(b"\xff\xd8\xff\xe0garbage" * 20)
    (data / broken.video).write_bytes(os.urandom(4096))
    (data / "cropped_aligned" / broken.track).rename(data / "no-crops")  # corrupt video and no crops: cannot be read
    out = tmp_path / "store"
    done = run_cli("extract", "--data", str(data), "--split", "train", "--out", str(out), *TINY)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "corrupt JPEG" in done.stderr and broken.track in done.stderr
    assert "video_reader.cc" not in done.stderr  # PyAV refuses the garbage before decord's C++ logger can print its own lines
    store = open_store(out)
    summary = store.summary()["splits"]["train"]
    assert broken.track in summary["sets"][VISUAL]["failed"] and broken.track in summary["sets"][AUDIO]["failed"]
    others = [t.track for t in tracks if t.video != broken.video]
    assert all(store.is_complete("train", t) for t in others)
    mask = store.read("train", victim.track, f"{VISUAL}/mask")
    assert not mask[int(crop.stem) - 1]
    info = json.loads(run_cli("info", str(out), "--json").stdout)
    assert broken.track in info["splits"]["train"]["sets"][VISUAL]["failed"]


def _half_written(out: Path, split: str) -> list[str]:
    """Tracks whose visual set's group is on disk but not marked complete in the track's attrs: a write under way
    (the visual set, never empty, takes two slowed writes, data and mask, before its mark)."""
    if not (out / split).is_dir():
        return []
    found = []
    for track, attrs in open_store(out).track_index(split).items():
        done = attrs.get("complete") or {}
        if (out / split / track / VISUAL / "zarr.json").is_file() and VISUAL not in done:
            found.append(track)
    return found


def test_kill_9_inside_a_write_then_rerun_equals_a_clean_run(synth_data, tiny_store, tmp_path):
    out = tmp_path / "killed"
    arguments = ["extract", "--data", str(synth_data), "--split", "train", "--out", str(out), *TINY]
    process = subprocess.Popen([sys.executable, "-c", SLOWED, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, seen = time.time() + 120, []
    while time.time() < deadline and process.poll() is None and not seen:
        time.sleep(0.02)
        try:
            seen = _half_written(out, "train")
        except Exception:  # the store's root is being created right now
            continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert seen, "no write was ever seen under way"
    store = open_store(out)
    assert not store.is_complete("train", seen[0]) and VISUAL not in store.track_attrs("train", seen[0])["complete"]  # nothing half-marked
    assert len([t for t in store.tracks("train") if store.is_complete("train", t)]) < len(scan(synth_data, split="train").tracks)
    assert run_cli(*arguments).returncode == 0
    assert_stores_equal(out, tiny_store, "train")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_extract_through_a_real_dask_scheduler_and_worker(synth_data, tiny_store, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    # scheduler and worker unpickle this checkout's dva, not whichever one the environment installed
    here = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    scheduler = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=here)
    worker = subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=here)
    try:
        out = tmp_path / "dask"
        done = subprocess.run([*DVA, "extract", "--data", str(synth_data), "--split", "train", "--out", str(out), *TINY, "--scheduler", address], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert_stores_equal(out, tiny_store, "train", exact=False)  # single-threaded workers
    finally:
        worker.terminate()
        scheduler.terminate()
        worker.wait(30)
        scheduler.wait(30)


def test_local_cluster_workers_and_hdf5_round_trip(synth_data, tiny_store, tmp_path):
    out = tmp_path / "local"
    done = subprocess.run([*DVA, "extract", "--data", str(synth_data), "--split", "val", "--out", str(out), *TINY, "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_stores_equal(out, tiny_store, "val", exact=False)  # single-threaded workers
    h5 = tmp_path / "features.h5"
    back = tmp_path / "back"
    assert run_cli("convert", str(out), str(h5)).returncode == 0
    assert run_cli("convert", str(h5), str(back)).returncode == 0
    assert_stores_equal(h5, out, "val")
    assert_stores_equal(back, out, "val")


def test_visual_source_video_decodes_frames_and_masks_rows_past_the_end(synth_data, tmp_path):
    out = tmp_path / "frames"
    report = run_extract(tiny_settings(synth_data, "train", out, visual_source="video"))
    assert not report.failed
    store = open_store(out)
    assert store.feature_sets()[VISUAL]["preprocessing"]["visual_source"] == "video"
    for track in scan(synth_data, split="train").tracks:
        mask = store.read("train", track.track, f"{VISUAL}/mask")
        np.testing.assert_array_equal(mask, np.arange(track.n_frames) < track.n_video_frames)


# `dva extract` that, once it holds its first claim of a video, waits (up to a minute) until the other process holds
# one too: the two runs then overlap whatever their start-up times. The claims themselves are dva's own.
MEET = ("import os, sys, time; from pathlib import Path; import dva.pipeline.claims as claims; real = claims.Claims.try_claim\n"
        "def try_claim(self, key):\n"
        "    got = real(self, key)\n"
        "    if got and self.folder.name != 'store' and not getattr(claims, 'met', False):\n"
        "        claims.met, meeting = True, Path(os.environ['DVA_TEST_MEET'])\n"
        "        (meeting / str(os.getpid())).touch()\n"
        "        deadline = time.time() + 60\n"
        "        while len(list(meeting.iterdir())) < 2 and time.time() < deadline:\n"
        "            time.sleep(0.02)\n"
        "    return got\n"
        "claims.Claims.try_claim = try_claim; sys.argv = ['dva'] + sys.argv[1:]; from dva.cli import main; main()")


def _claim_holders(folder: Path) -> set[int]:
    """The pids named by the claim files in folder now (a file being written or removed is passed over)."""
    pids = set()
    for path in folder.glob("*.claim") if folder.is_dir() else []:
        try:
            pids.add(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
    return pids


def test_two_concurrent_extracts_hold_claims_at_once_share_the_split_and_equal_a_clean_run(synth_data, tiny_store, tmp_path):
    out, meeting = tmp_path / "shared", tmp_path / "meeting"
    meeting.mkdir()
    arguments = ["extract", "--data", str(synth_data), "--split", "train", "--out", str(out), *TINY, "--json"]
    env = {**os.environ, "DVA_TEST_MEET": str(meeting)}
    processes = [subprocess.Popen([sys.executable, "-c", MEET, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    together = set()  # pids seen holding claims of the split in one look at the claim files
    while any(process.poll() is None for process in processes) and len(together) < 2:
        together = max(together, _claim_holders(out / ".claims" / "train"), key=len)
        time.sleep(0.01)
    results = [process.communicate(timeout=300) for process in processes]
    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0 and "Traceback" not in stderr, stderr
    assert together == {process.pid for process in processes}  # both held a claim at the same moment
    reports = [json.loads(stdout) for stdout, _ in results]
    assert all(report["extracted"] for report in reports)  # each did part of the work
    extracted = [track for report in reports for track in report["extracted"]]
    assert sorted(extracted) == sorted(t.track for t in scan(synth_data, split="train").tracks)  # each track once
    assert_stores_equal(out, tiny_store, "train")
    assert not list((out / ".claims").rglob("*.claim"))  # every claim released


def test_a_dead_process_claim_is_taken_over_and_shards_split_the_work(synth_data, tiny_store, tmp_path):
    out = tmp_path / "sharded"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = out / ".claims" / "train"
    claims.mkdir(parents=True)
    victim = scan(synth_data, split="train").tracks[0]
    (claims / f"{Path(victim.video).stem}.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "time": time.time(), "token": "x"}))
    shares = []
    for share in ("0/2", "1/2"):
        done = run_cli("extract", "--data", str(synth_data), "--split", "train", "--out", str(out), *TINY, "--json", "--shard", share)
        assert done.returncode == 0, done.stderr
        shares.append(set(json.loads(done.stdout)["extracted"]))
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert_stores_equal(out, tiny_store, "train")
    bad = run_cli("extract", "--data", str(synth_data), "--split", "train", "--out", str(out), *TINY, "--shard", "2/2")
    assert bad.returncode == 2 and "--shard" in bad.stderr and "Traceback" not in bad.stderr


def test_a_pair_decodes_and_encodes_its_shared_sound_once(synth_data, tmp_path, monkeypatch):
    import dva.pipeline.stream as stream
    from dva.pipeline.encoders.ast import AstEncoder

    # spies, not fakes: the real decoder and encoder run, the test only counts their calls
    read, encoded = [], []
    real_read, real_encode = stream.read_audio, AstEncoder.encode_waveform
    monkeypatch.setattr(stream, "read_audio", lambda track, root: read.append(track.track) or real_read(track, root))
    monkeypatch.setattr(AstEncoder, "encode_waveform", lambda self, *a, **k: encoded.append(1) or real_encode(self, *a, **k))
    report = run_extract(tiny_settings(synth_data, "train", tmp_path / "pair"))
    tracks = scan(synth_data, split="train").tracks
    videos = {t.video for t in tracks}
    assert not report.failed and len(read) == len(videos) == len(encoded) < len(tracks)
    assert "synth_000_right" not in read
    store = open_store(tmp_path / "pair")
    for name in (f"{AUDIO}/data", f"{AUDIO}/time"):
        np.testing.assert_array_equal(store.read("train", "synth_000_left", name), store.read("train", "synth_000_right", name))


def test_crops_decode_to_the_pixels_pil_gives_and_odd_files_are_read_or_named(synth_data, tmp_path):
    from PIL import Image

    from dva.pipeline.reading import read_crop

    track = scan(synth_data, split="train").tracks[0]
    crops = sorted((synth_data / track.frames_dir).glob("*.jpg"))[:20]
    for crop in crops:  # libjpeg-turbo through torchvision, bit for bit what PIL decodes
        with Image.open(crop) as image:
            np.testing.assert_array_equal(read_crop(crop).permute(1, 2, 0).numpy(), np.array(image.convert("RGB")))
    png = tmp_path / "00001.jpg"  # a PNG under a .jpg name: read (by PIL), not lost
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(png, format="PNG")
    assert read_crop(png).shape == (3, 8, 8) and int(read_crop(png).max()) == 7
    empty = tmp_path / "00002.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt JPEG"):
        read_crop(empty)
    assert read_crop(tmp_path / "00003.jpg") is None  # a gap in the crops: that row stays masked


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_jpeg_decoding_without_a_gpu_is_refused_in_one_line(synth_data, tmp_path):
    done = run_cli("extract", "--data", str(synth_data), "--split", "val", "--out", str(tmp_path / "s"), *TINY, "--jpeg-decoder", "cuda")
    assert done.returncode == 2 and "--jpeg-decoder cuda" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_bad_annotation_line_and_damaged_sound_through_the_cli_exit_1_naming_them(synth_data, tmp_path):
    from typer.testing import CliRunner

    from dva.cli import app
    from tests.conftest import garble_audio

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    tracks = {t.track: t for t in scan(data, split="train").tracks}
    annotation = data / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "synth_001.txt"
    lines = annotation.read_text().splitlines()
    lines[6] = "0.2;0.3"  # line 7 of the file
    annotation.write_text("\n".join(lines) + "\n")
    garbled = garble_audio(data / tracks["12-30-640x360"].video, 1.0, 1.3)  # a stretch of it: silence, and a warning
    garble_audio(data / tracks["synth_000_left"].video, 0.0, 60.0)  # all of it: the pair sharing that sound fails
    result = CliRunner().invoke(app, ["extract", "--data", str(data), "--split", "train", "--out", str(tmp_path / "store"), *TINY, "--json"])
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{annotation}:7: expected 'valence,arousal', got '0.2;0.3'" in result.stderr  # the file and the line
    assert garbled >= 4 and f"{tracks['12-30-640x360'].video}: {garbled} audio packets" in result.stderr and "could not be decoded and are silence" in result.stderr
    failed = {line.split(": ")[2]: line for line in result.stderr.splitlines() if line.startswith("dva: failed: ")}
    assert "packets refused by the decoder" in failed["synth_000_left"] and "packets refused by the decoder" in failed["synth_000_right"]
    report = json.loads(result.stdout)
    assert report["extracted"] == ["12-30-640x360"] and set(report["failed"]) == {"synth_001", "synth_000_left", "synth_000_right"}
