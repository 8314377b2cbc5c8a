"""EXPR and AU labels in the store beside VA's: written by extract, added to an older store by `dva labels`, shown by
`dva info`, and each challenge's submission built from its own sample file."""

import json
import shutil
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.data.annotations import fit_rows, read_task_annotation
from dva.data.tasks import AU_NAMES, EXPR_CLASSES
from dva.data.test_set import read_sample_file, submission_header, task_test_files
from dva.stores import open_store
from dva.trainer.results.submission import build_task_submission
from tests.conftest import TINY_AUDIO, TINY_VISUAL


def test_extract_stores_each_track_once_with_every_tasks_labels_and_splits(synth_data, tiny_store):
    with open_store(tiny_store) as store:
        assert store.task_tracks("expr", "val") == [("train", "synth_001"), ("val", "synth_101")]  # a VA train track in EXPR's val
        assert store.task_tracks("au", "test") == [("test", "synth_200"), ("test", "synth_201"), ("val", "synth_100")]
        assert store.task_tracks("va", "train") == [("train", t) for t in store.tracks("train")]
        attrs = store.track_attrs("train", "synth_001")
        assert attrs["tasks"] == {"va": "train", "expr": "val"} and not store.has_array("train", "synth_001", "labels_au")
        expr = store.read("train", "synth_001", "labels_expr")
        file = read_task_annotation(synth_data / "Annotations/EXPR_Recognition_Challenge/Validation_Set/synth_001.txt", "expr")
        assert expr.dtype == np.int8 and expr.shape == (attrs["rows"],)
        np.testing.assert_array_equal(expr, fit_rows(file, attrs["rows"], "expr"))
        au = store.read("train", "synth_000_left", "labels_au")
        assert au.dtype == np.int8 and au.shape == (store.track_attrs("train", "synth_000_left")["rows"], 12) and (au == -1).all(axis=1).any()
        tests = store.split_attrs("test")["task_tests"]
        assert tests["expr"]["sample"]["path"].endswith("CVPR_6th_ABAW_Expr_test_set_example.txt")
        assert set(tests["expr"]["test_list"]["tracks"]) == {"12-30-640x360", "synth_100", "synth_201"}
        summary = store.summary()["tasks"]
    assert summary["expr"]["val"]["tracks"] == 2 and summary["expr"]["val"]["stored_in"] == {"train": 1, "val": 1}
    assert 0 < summary["au"]["train"]["annotated"] < summary["au"]["train"]["frames"]  # runs of -1
    # EXPR's test tracks include VA train and val tracks: their VA labels are not EXPR's, so none is annotated for EXPR
    assert summary["expr"]["test"]["stored_in"] == {"test": 1, "train": 1, "val": 1} and summary["expr"]["test"]["annotated"] == 0
    shown = CliRunner().invoke(app, ["info", str(tiny_store)]).stdout
    assert "task    expr val    2 tracks (1 in train, 1 in val)" in shown


def _forget_other_tasks(path):
    """The store as dva wrote it before it knew EXPR and AU: no labels_expr/labels_au, no tasks attrs (edited with
    zarr itself, not through dva), no task_tests on the test split."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(str(path), mode="r+")
        for split in ("train", "val", "test"):
            for name, group in root[split].groups():
                for array in ("labels_expr", "labels_au"):
                    if array in group:
                        del group[array]
                attrs = dict(group.attrs)
                group.attrs.clear()
                group.attrs.update({k: v for k, v in attrs.items() if k not in ("tasks", "annotated")})
        test = dict(root["test"].attrs)
        root["test"].attrs.clear()
        root["test"].attrs.update({k: v for k, v in test.items() if k != "task_tests"})


def test_labels_adds_the_other_tasks_to_an_older_store_without_reencoding(synth_data, tiny_store, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_store, old)
    _forget_other_tasks(old)
    with open_store(old) as store:
        assert store.task_tracks("expr", "val") == [] and store.task_tracks("va", "val") == [("val", t) for t in store.tracks("val")]
        before = {t: store.read("train", t, f"{TINY_VISUAL}/data") for t in store.tracks("train")}
    done = CliRunner().invoke(app, ["labels", "--data", str(synth_data), "--features", str(old), "--json"])
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["labelled"]["expr"] == report["labelled"]["au"] == 4 and not report["not_in_store"]  # the tracks with an annotation file
    with open_store(old) as store, open_store(tiny_store) as made:
        for split in ("train", "val", "test"):
            for track in made.tracks(split):
                assert store.track_attrs(split, track).get("tasks") == made.track_attrs(split, track)["tasks"], track
                for array in ("labels", "labels_expr", "labels_au"):
                    assert store.has_array(split, track, array) == made.has_array(split, track, array), (track, array)
                    if made.has_array(split, track, array):
                        np.testing.assert_array_equal(store.read(split, track, array), made.read(split, track, array))
        assert store.split_attrs("test")["task_tests"] == made.split_attrs("test")["task_tests"]
        for track, data in before.items():  # the features are as they were
            np.testing.assert_array_equal(store.read("train", track, f"{TINY_VISUAL}/data"), data)
        assert store.is_complete("train", "synth_001", [TINY_VISUAL, TINY_AUDIO])


@pytest.mark.parametrize("task", ["expr", "au"])
def test_a_challenges_submission_has_its_samples_rows_and_refuses_bad_values(synth_data, tmp_path, task):
    _, sample_path = task_test_files(synth_data, task)
    sample = read_sample_file(sample_path)
    rows = sample.rows_per_track()
    tracks = list(rows)
    offsets = np.concatenate([[0], np.cumsum([rows[t] + 1 for t in tracks])])  # one frame more than the sample asks
    n = int(offsets[-1])
    pred = np.arange(n) % 8 if task == "expr" else (np.arange(n * 12).reshape(n, 12) % 3 == 0).astype(int)
    submission = build_task_submission(task, tracks, offsets, pred, sample, tracks)
    assert "same order" in submission.check(sample)
    path = submission.write(tmp_path / f"{task}.txt")
    lines = path.read_text().splitlines()
    assert lines[0] == submission_header(task) == "image_location," + ",".join(EXPR_CLASSES if task == "expr" else AU_NAMES)
    assert [line.split(",")[0] for line in lines[1:]] == sample.locations
    first = sample.frames[0] - 1  # frame N of the first track is its prediction row N-1
    assert lines[1].split(",")[1:] == [str(v) for v in np.atleast_1d(pred[first])]
    bad = build_task_submission(task, tracks, offsets, pred + 5, sample, tracks)
    with pytest.raises(ValueError, match="not (class indices|12 bits)"):
        bad.check(sample)
