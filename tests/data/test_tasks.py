"""The three challenges of one release: EXPR and AU annotations beside VA's, their own splits, test lists and samples."""

import numpy as np
import pytest

from dva.data.aff_wild2 import scan
from dva.data.annotations import read_task_annotation
from dva.data.synth_tasks import AU_RULES, expression
from dva.data.tasks import AU_NAMES
from dva.data.test_set import read_sample_file, task_test_files
from dva.errors import DataError
from dva.pipeline.reading import plan_track
from tests.conftest import write_annotation, write_video


def test_synth_plants_expr_and_au_learnably_with_their_own_splits(synth_data):
    tracks = {t.track: t for t in scan(synth_data).tracks}
    assert tracks["synth_001"].task_splits() == {"va": "train", "expr": "val"}  # not annotated for AU
    assert tracks["synth_100"].task_splits() == {"va": "val", "expr": "test", "au": "test"}
    assert tracks["synth_000_left"].tasks["expr"]["split"] == "train" and tracks["synth_000_right"].tasks["au"]["split"] == "train"
    agree_expr, agree_au, not_annotated = [], [], 0
    for track in tracks.values():
        va = track.tasks["va"]
        if va["annotation"] is None:
            continue
        labels = read_task_annotation(synth_data / va["annotation"], "va")
        for task in ("expr", "au"):
            info = track.tasks.get(task)
            if not info or info["annotation"] is None:
                continue
            values = read_task_annotation(synth_data / info["annotation"], task)
            assert values.shape[0] == labels.shape[0] == track.n_frames  # one row per frame, as VA's
            keep = ~np.isnan(labels).any(axis=1) & (values >= 0 if task == "expr" else (values >= 0).all(axis=1))
            not_annotated += int((values < 0).any(axis=-1).sum()) if task == "au" else int((values < 0).sum())
            v, a = labels[keep, 0], labels[keep, 1]
            if task == "expr":  # the region of the VA plane, up to the label noise and VA's rounding
                agree_expr.append((values[keep] == expression(v, a, np.random.default_rng(0))).mean())
            else:
                agree_au.append(np.mean([(values[keep, k] == AU_RULES[name](v, a)).mean() for k, name in enumerate(AU_NAMES)]))
    assert agree_expr and agree_au and not_annotated > 0
    assert min(agree_expr) > 0.85 and min(agree_au) > 0.9


def test_each_challenge_finds_its_own_test_list_and_sample_which_decide_rows(synth_data):
    files = {task: task_test_files(synth_data, task) for task in ("va", "expr", "au")}
    assert [p.name for p in files["expr"]] == ["Expression_Classification_Challenge_test_set_release.txt", "CVPR_6th_ABAW_Expr_test_set_example.txt"]
    assert [p.name for p in files["au"]] == ["Action_Unit_Detection_Challenge_test_set_release.txt", "CVPR_6th_ABAW_AU_test_set_sample.txt"]
    rows = {task: read_sample_file(sample).rows_per_track() for task, (_, sample) in files.items()}
    assert rows["expr"]["synth_201"] != rows["va"]["synth_201"]  # two challenges, one video, two row counts
    test = {t.track: t for t in scan(synth_data, split="test").tracks}
    assert test["synth_201"].n_frames == max(rows["va"]["synth_201"], rows["expr"]["synth_201"])
    assert test["synth_201"].tasks["expr"]["rows"] == rows["expr"]["synth_201"]
    assert test["12-30-640x360"].split == "train" and test["12-30-640x360"].tasks["expr"]["split"] == "test"  # stored where VA puts it
    assert {t.track for t in scan(synth_data, split="test", tasks=("va",)).tracks} == set(rows["va"])


def test_a_track_is_as_long_as_its_longest_annotation_and_each_task_is_padded(tmp_path):
    write_video(tmp_path / "videos" / "batch1" / "a.mp4", frames=20)
    write_annotation(tmp_path / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "a.txt", lines=20)
    expr = tmp_path / "Annotations" / "EXPR_Classification_Challenge" / "Validation_Set" / "a.txt"
    expr.parent.mkdir(parents=True)
    expr.write_text("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n" + "3\n" * 21 + "-1\n-1\n")
    (track,) = scan(tmp_path, split="val").tracks  # EXPR's val: a VA train track, stored under train
    assert track.split == "train" and track.task_splits() == {"va": "train", "expr": "val"} and track.n_frames == 23
    plan = plan_track(track, tmp_path)
    assert plan.rows == 23 and plan.labels.shape == (23, 2) and np.isnan(plan.labels[20:]).all() and not np.isnan(plan.labels[:20]).any()
    np.testing.assert_array_equal(plan.task_labels["labels_expr"], [3] * 21 + [-1, -1])
    with pytest.raises(DataError, match="no Validation_Set folder"):
        scan(tmp_path, split="val", tasks=("va",))


@pytest.mark.parametrize("task, line, message", [("expr", "9", "one class 0-7"), ("au", "0,1,1", "12 comma-separated"), ("au", "0,1,0,0,0,0,0,0,0,0,0,2", "12 comma")])
def test_a_bad_expr_or_au_line_names_the_file_and_line(tmp_path, task, line, message):
    path = tmp_path / "a.txt"
    path.write_text("header\n1\n".replace("1", "1" if task == "expr" else ",".join(["1"] * 12)) + line + "\n")
    with pytest.raises(DataError, match=rf"a.txt:3: expected {message}"):
        read_task_annotation(path, task)
