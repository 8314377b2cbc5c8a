"""The ABAW submission: one file, exactly the organisers' sample rows in their order; nothing dropped in silence."""

import json
import shutil

import numpy as np
import pytest

from dva.data.synth import SAMPLE_FILE
from dva.data.test_set import read_sample_file
from dva.stores import open_store
from tests.conftest import run_cli, TINY_VISUAL

HEADER = "image_location,valence,arousal"


def dva(*args):
    return run_cli(*args)  # in this process: BLOCKED's subprocesses (tests/trainer/test_fit.py) show these commands need no decoder


def test_submission_has_the_sample_rows_in_order_and_is_checked(run_dir, tiny_store, synth_data, tmp_path):
    run, _ = run_dir
    done = dva("predict", "--run", run, "--features", tiny_store, "--split", "test", "--out", tmp_path / "sub.txt")
    assert done.returncode == 0, done.stderr
    assert f"checked against {SAMPLE_FILE}" in done.stdout and "same order" in done.stdout
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    sample = read_sample_file(synth_data / SAMPLE_FILE)
    assert lines[0] == HEADER and [line.split(",")[0] for line in lines[1:]] == sample.locations
    values = np.array([[float(x) for x in line.split(",")[1:]] for line in lines[1:]])
    assert np.isfinite(values).all() and np.abs(values).max() <= 1 and values.std(axis=0).min() > 0
    # the sample's rows, not the decoded frames, decided the stored length of each test track
    store = open_store(tiny_store)
    for track, rows in sample.rows_per_track().items():
        assert store.read("test", track, f"{TINY_VISUAL}/data").shape[0] == rows


def test_another_sample_order_is_followed_row_for_row(run_dir, tiny_store, synth_data, tmp_path):
    run, _ = run_dir
    sample = read_sample_file(synth_data / SAMPLE_FILE)
    reordered = list(reversed(sample.locations))  # rows in any order: each value goes to its own frame
    path = tmp_path / "VA_test_set_sample.txt"
    path.write_text(HEADER + "\n" + "\n".join(f"{loc},," for loc in reordered) + "\n")
    assert dva("predict", "--run", run, "--features", tiny_store, "--out", tmp_path / "a.txt").returncode == 0
    done = dva("predict", "--run", run, "--features", tiny_store, "--out", tmp_path / "b.txt", "--sample", path)
    assert done.returncode == 0, done.stderr
    a = {line.split(",")[0]: line for line in (tmp_path / "a.txt").read_text().splitlines()[1:]}
    b = (tmp_path / "b.txt").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in b] == reordered and [a[line.split(",")[0]] for line in b] == b


@pytest.fixture()
def store_with_failures(tiny_store, tmp_path):
    """A copy of the tiny store where one test track and one extra val track failed, as `dva extract` records them."""
    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    with open_store(copy, "a") as store:
        victim = store.tracks("test")[0]
        sets = list(store.feature_sets())
        store.mark_failed("test", victim, "videos/batch1/x.mp4: video cannot be decoded", sets)
        store.mark_failed("val", "ghost", "videos/batch2/ghost.mp4: video cannot be decoded", sets)
    return copy, victim


def test_a_failed_test_track_refuses_the_submission_unless_allowed(run_dir, store_with_failures, tmp_path):
    run, _ = run_dir
    store, victim = store_with_failures
    done = dva("predict", "--run", run, "--features", store, "--out", tmp_path / "sub.txt")
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert victim in done.stderr and "cannot be decoded" in done.stderr and not (tmp_path / "sub.txt").exists()
    done = dva("predict", "--run", run, "--features", store, "--out", tmp_path / "sub.txt", "--allow-incomplete", "--json")
    assert done.returncode == 0, done.stderr
    assert "dva: warning:" in done.stderr and victim in done.stderr
    summary = json.loads(done.stdout)
    assert summary["missing"] == [victim]
    sample = read_sample_file(open_store(store).split_attrs("test")["sample"]["path"])
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == sample.locations  # never a short file
    filled = [line for line in lines[1:] if line.startswith(victim + "/")]
    assert len(filled) == sample.rows_per_track()[victim] and all(line.endswith(",0.000000,0.000000") for line in filled)
    assert f"{victim} ({len(filled)} rows; failed: " in done.stderr and "filled with valence 0, arousal 0" in done.stderr


def test_fit_names_every_left_out_track_in_one_warning(store_with_failures, tmp_path):
    store, _ = store_with_failures
    done = dva("fit", "--features", store, "--out", tmp_path / "run", "--epochs", "1", "--hidden", "16", "--prompt", "none", "--json")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("dva: warning:")]
    assert len(warnings) == 1 and "val: 1 of 3 tracks left out (1 failed" in warnings[0] and "ghost" in warnings[0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val_left_out"] == {"ghost": "failed: videos/batch2/ghost.mp4: video cannot be decoded"}


def cli(*args):
    """`dva ARGS` in this process (typer's runner): (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from dva.cli import app

    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("damage", ["missing", "incomplete"])
def test_a_missing_or_incomplete_test_track_refuses_the_submission_or_is_filled_when_allowed(run_dir, tiny_store, tmp_path, damage):
    import zarr  # the store edited with zarr itself: a track deleted, or a set's mark gone (as a run killed mid-write leaves it)

    from tests.conftest import TINY_AUDIO

    run, _ = run_dir
    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    victim = open_store(copy).tracks("test")[0]
    if damage == "missing":
        shutil.rmtree(copy / "test" / victim)
    else:
        group = zarr.open_group(str(copy / "test" / victim), mode="r+")
        group.attrs["complete"] = {k: v for k, v in group.attrs["complete"].items() if k != TINY_AUDIO}
    code, _, stderr = cli("predict", "--run", run, "--features", copy, "--out", tmp_path / "sub.txt")
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and not (tmp_path / "sub.txt").exists()
    why = "missing from the store" if damage == "missing" else f"incomplete ({TINY_AUDIO})"
    assert "1 of 2 test tracks cannot be predicted" in stderr and f"{victim} ({why})" in stderr
    # allowed: every row of the sample in its order, the victim's rows filled by the stated rule and named with their count
    code, stdout, stderr = cli("predict", "--run", run, "--features", copy, "--out", tmp_path / "sub.txt", "--allow-incomplete")
    assert code == 0, stderr
    sample = read_sample_file(open_store(copy).split_attrs("test")["sample"]["path"])
    rows = sample.rows_per_track()[victim]
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    assert lines[0] == HEADER and [line.split(",")[0] for line in lines[1:]] == sample.locations
    assert [line.split(",", 1)[1] for line in lines[1:] if line.startswith(victim + "/")] == ["0.000000,0.000000"] * rows
    warned = [line for line in stderr.splitlines() if line.startswith("dva: warning:") and "filled with valence 0, arousal 0" in line]
    assert len(warned) == 1 and f"{victim} ({rows} rows; {why})" in warned[0]
    assert f"{rows} rows of 1 tracks without predictions filled with valence 0, arousal 0" in stdout and "same order" in stdout


def test_sample_rows_past_the_stored_frames_repeat_the_last_prediction_and_are_named(run_dir, tiny_store, synth_data, tmp_path):
    run, _ = run_dir
    sample = read_sample_file(synth_data / SAMPLE_FILE)
    longer = sample.locations[0].split("/")[0]
    rows = sample.rows_per_track()[longer]
    extra = [f"{longer}/{frame:05d}.jpg" for frame in range(rows + 1, rows + 4)]  # three frames the store does not hold
    last = max(i for i, loc in enumerate(sample.locations) if loc.startswith(longer + "/"))
    locations = sample.locations[: last + 1] + extra + sample.locations[last + 1 :]
    path = tmp_path / "VA_test_set_sample.txt"
    path.write_text(HEADER + "\n" + "\n".join(f"{loc},," for loc in locations) + "\n")
    assert cli("predict", "--run", run, "--features", tiny_store, "--out", tmp_path / "a.txt", "--smooth", "0")[0] == 0
    code, _, stderr = cli("predict", "--run", run, "--features", tiny_store, "--out", tmp_path / "b.txt", "--smooth", "0", "--sample", path)
    assert code == 0, stderr
    assert "3 sample rows lie past the stored frames of 1 tracks" in stderr and longer in stderr
    a = dict(line.split(",", 1) for line in (tmp_path / "a.txt").read_text().splitlines()[1:])
    b = [line.split(",", 1) for line in (tmp_path / "b.txt").read_text().splitlines()[1:]]
    assert [loc for loc, _ in b] == locations  # every row of the sample, in its order
    assert all(values == a[loc] for loc, values in b if loc in a)
    assert all(values == a[sample.locations[last]] for loc, values in b if loc in extra)  # the track's last stored frame


def test_ablate_on_workers_names_every_left_out_track_once_in_the_client(store_with_failures, tmp_path):
    store, _ = store_with_failures
    done = dva("ablate", "--features", store, "--out", tmp_path / "ab", "--workers", "1", "--grid", "fusion=concat,gated",
               *[f"--set={k}={v}" for k, v in (("epochs", 1), ("hidden", 16), ("prompt", "none"), ("seq_len", 32))])
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("dva: warning:")]
    assert len(warnings) == 1 and "val: 1 of 3 tracks left out (1 failed" in warnings[0] and "ghost" in warnings[0]


def test_each_challenges_submission_fills_a_track_without_predictions_by_its_rule_or_refuses_an_unknown_length(tmp_path):
    from dva.trainer.results.submission import build_task_submission, write_per_track

    offsets = np.array([0, 3])  # one track "a" with 3 predicted frames; "b" has none
    preds = {"va": np.full((3, 2), 0.5, np.float32), "expr": np.array([4, 4, 4]), "au": np.ones((3, 12), np.int64)}
    fill = {"va": [0.0, 0.0], "expr": 0, "au": [0] * 12}
    for task, pred in preds.items():
        done = build_task_submission(task, ["a"], offsets, pred, None, ["b", "a"], lengths={"b": 2})
        assert done.locations == ["b/00001.jpg", "b/00002.jpg", "a/00001.jpg", "a/00002.jpg", "a/00003.jpg"] and done.missing == {"b": 2}
        assert np.array_equal(done.values[:2], np.asarray([fill[task]] * 2)) and np.array_equal(done.values[2:], pred)
        assert "2 rows of 1 tracks without predictions filled with" in done.check(None)
    with pytest.raises(ValueError, match="no row count"):
        build_task_submission("va", ["a"], offsets, preds["va"], None, ["b", "a"])

    write_per_track(tmp_path, ["a"], offsets, preds["va"], {"b": 2})  # older challenges: the filled track's file too
    assert (tmp_path / "b.txt").read_text().splitlines() == ["valence,arousal", "0.000000,0.000000", "0.000000,0.000000"]
