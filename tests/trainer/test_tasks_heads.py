"""dva fit --task expr|au: the F1 figures, the loss weights, the heads learning on the synthetic release, their run
directories, their submissions, and the one-line errors (a store without the task's labels, an ensemble of two tasks)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app
from dva.data.tasks import AU_NAMES, EXPR_CLASSES
from dva.metrics import f1_binary, f1_per_class, macro_f1
from tests.conftest import TASK_FIT as QUICK



def dva(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_f1_against_hand_worked_cases():
    # target 1 1 0 0 1, pred 1 0 0 1 1: TP 2, FP 1, FN 1 -> 4 / 6; a frame not annotated (-1, NaN) is ignored
    assert f1_binary([1, 0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 1, -1, np.nan]) == pytest.approx(4 / 6)
    assert f1_binary([0, 0], [0, 0]) == 0.0  # no positive anywhere: 0, as sklearn's zero_division=0
    # classes 0..2: target 0 0 1 2, pred 0 1 1 1 -> class 0: TP1 FN1 -> 2/3; class 1: TP1 FP2 -> 2/4; class 2: FN1 -> 0
    assert f1_per_class([0, 1, 1, 1], [0, 0, 1, 2], 3) == pytest.approx([2 / 3, 0.5, 0.0])
    assert macro_f1([0, 1, 1, 1, 2], [0, 0, 1, 2, -1], 4) == pytest.approx((2 / 3 + 0.5 + 0 + 0) / 4)  # over every class


def test_class_weights_and_pos_weights_against_hand_computed_counts():
    from dva.trainer.model.losses import class_weights, pos_weights

    # counts: class 0 x3, class 1 x1, class 2 absent, class 3 x2 (and two frames not annotated)
    labels = torch.tensor([0, 0, 0, 1, 3, 3, float("nan"), float("nan")])
    inverse = np.array([1 / 3, 1, 0, 1 / 2])
    assert class_weights(labels, 4).numpy() == pytest.approx(inverse * 3 / inverse.sum())  # mean 1 over the 3 present
    bits = torch.tensor([[1, 0], [0, 0], [0, 1], [float("nan"), 1], [1, float("nan")]])  # unit 0: 2 pos 2 neg; unit 1: 2 pos 2 neg... see below
    bits[1, 1] = 0
    bits = torch.cat([bits, torch.tensor([[0.0, 0.0]])])  # unit 0: pos 2, neg 3; unit 1: pos 2, neg 3
    assert pos_weights(bits).numpy() == pytest.approx([3 / 2, 3 / 2])
    assert pos_weights(torch.tensor([[0.0], [0.0]])).numpy() == pytest.approx([1.0])  # no positive: weight 1


def test_expr_and_au_losses_ignore_frames_not_annotated():
    from dva.trainer.model.losses import au_loss, expr_loss

    torch.manual_seed(0)
    scores, bits = torch.randn(1, 4, 8), torch.randn(1, 4, 12)
    y = torch.tensor([[[2.0], [5.0], [float("nan")], [1.0]]])
    changed = scores.clone()
    changed[0, 2] += 10  # the frame without a label
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert expr_loss(scores, y, mask, None) == pytest.approx(float(expr_loss(changed, y, mask, None)))
    assert expr_loss(scores, y, mask, None) == pytest.approx(float(torch.nn.functional.cross_entropy(scores[0, [0, 1, 3]], torch.tensor([2, 5, 1]))))
    target = (torch.rand(1, 4, 12) > 0.5).float()
    target[0, 1, 3] = float("nan")
    moved = bits.clone()
    moved[0, 1, 3] += 10
    assert au_loss(bits, target, mask, None) == pytest.approx(float(au_loss(moved, target, mask, None)))


def _held_labels(run) -> np.ndarray:
    from dva.trainer.fit import load_features

    config = json.loads((run / "config.json").read_text())
    features = load_features(config["store"]["path"], task=config["task"])
    return features.val.labels.numpy()


def test_expr_and_au_heads_learn_above_a_constant_predictor(task_runs):
    expr_run, expr = task_runs["expr"]
    labels = _held_labels(expr_run)[:, 0]
    constant = max(macro_f1(np.full(labels.shape, c), labels, 8) for c in range(8))  # the best single class for every frame
    assert expr["best_val"]["expr_f1"] > constant + 0.05, (expr["best_val"]["expr_f1"], constant)
    au_run, au = task_runs["au"]
    bits = _held_labels(au_run)
    constant = np.mean([max(f1_binary(np.full(bits.shape[0], v), bits[:, u]) for v in (0, 1)) for u in range(12)])  # per unit all 0 or all 1
    assert au["best_val"]["au_f1"] > constant + 0.03, (au["best_val"]["au_f1"], constant)


def test_a_task_run_records_its_figures_weights_and_thresholds(task_runs):
    expr = json.loads((task_runs["expr"][0] / "metrics.json").read_text())
    assert expr["task"] == "expr" and expr["figure"] == "expr_f1"
    assert list(expr["best_val"]["expr_f1_per_class"]) == list(EXPR_CLASSES)
    assert expr["best_val"]["expr_f1"] == pytest.approx(np.mean(list(expr["best_val"]["expr_f1_per_class"].values())))
    assert list(expr["loss_weights"]["values"]) == list(EXPR_CLASSES)
    assert isinstance(expr["smooth_seconds"], float) and "thresholds" not in expr
    au = json.loads((task_runs["au"][0] / "metrics.json").read_text())
    assert au["figure"] == "au_f1" and list(au["best_val"]["au_f1_per_au"]) == list(AU_NAMES)
    assert list(au["thresholds"]) == list(AU_NAMES) and all(0.05 <= t <= 0.95 for t in au["thresholds"].values())
    assert au["best_val_smoothed"]["au_f1"] >= au["best_val"]["au_f1"] - 1e-9 or au["smooth_seconds"] > 0  # thresholds chosen on val


def test_predict_writes_each_challenges_submission_in_its_sample_files_rows(task_runs, tiny_store, tmp_path):
    from dva.data.test_set import read_sample_file, submission_header
    from dva.stores import open_store

    with open_store(str(tiny_store), "r") as store:
        recorded = store.split_attrs("test")["task_tests"]
    for task, width in (("expr", 1), ("au", 12)):
        out = tmp_path / f"{task}.txt"
        code, stdout, stderr = dva("predict", "--run", task_runs[task][0], "--features", tiny_store, "--split", "test", "--out", out)
        assert code == 0, stderr
        lines = out.read_text().splitlines()
        sample = read_sample_file(recorded[task]["sample"]["path"])
        assert lines[0] == submission_header(task)
        assert [line.split(",")[0] for line in lines[1:]] == sample.locations
        values = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
        assert values.shape[1] == width and (values.min() >= 0) and values.max() <= (7 if task == "expr" else 1)


def test_per_frame_csvs_of_a_split_are_of_the_runs_tasks_tracks_wherever_stored(task_runs, run_dir, tiny_store, tmp_path):
    """--format csv --split test: an EXPR run writes EXPR's test tracks (VA train and val tracks among them), VA and AU
    runs together the tracks either puts in test, each CSV with both tasks' columns."""
    from dva.stores import open_store

    with open_store(str(tiny_store), "r") as store:
        expected = {task: sorted(t for _, t in store.task_tracks(task, "test")) for task in ("va", "expr", "au")}
    assert expected["expr"] != expected["va"]  # the synthetic release's EXPR test list takes tracks VA trains and selects on
    code, _, stderr = dva("predict", "--run", task_runs["expr"][0], "--features", tiny_store, "--split", "test", "--format", "csv", "--out", tmp_path / "expr")
    assert code == 0, stderr
    assert sorted(path.stem for path in (tmp_path / "expr").glob("*.csv")) == expected["expr"]
    code, _, stderr = dva("predict", "--run", run_dir[0], "--run", task_runs["au"][0], "--features", tiny_store, "--split", "test", "--format", "csv", "--out", tmp_path / "both")
    assert code == 0, stderr
    written = sorted((tmp_path / "both").glob("*.csv"))
    assert [path.stem for path in written] == sorted({*expected["va"], *expected["au"]})
    header = written[0].read_text().splitlines()[0].split(",")
    assert header[:4] == ["frame", "time", "valence", "arousal"] and "AU26_on" in header


def test_an_ensemble_of_two_tasks_is_refused_in_one_line(task_runs, tiny_store, tmp_path):
    code, _, stderr = dva("predict", "--run", task_runs["expr"][0], "--run", task_runs["au"][0], "--features", tiny_store, "--out", tmp_path / "x.txt")
    assert code == 2 and "different tasks" in stderr and len(stderr.strip().splitlines()) == 1


def test_va_loads_the_store_splits_it_always_did(tiny_store):
    from dva.stores import open_store
    from dva.trainer.fit import load_features

    features = load_features(str(tiny_store))  # task va: every VA track of the synthetic release is stored under its VA split
    with open_store(str(tiny_store), "r") as store:
        assert features.train.tracks == store.tracks("train") and features.val.tracks == store.tracks("val")
    assert features.train.labels.shape[1] == 2


def test_a_store_without_the_tasks_labels_is_a_one_line_error(tiny_store, tmp_path):
    from dva.stores import open_store

    copy = tmp_path / "no-expr"
    shutil.copytree(tiny_store, copy)
    with open_store(str(copy), "a") as store:
        for split in store.splits():
            for track, attrs in store.track_index(split).items():
                if store.has_array(split, track, "labels_expr"):
                    store.delete_array(split, track, "labels_expr")
                store.set_track_attrs(split, track, {"annotated": {k: v for k, v in (attrs.get("annotated") or {}).items() if k != "expr"}})
    code, _, stderr = dva("fit", "--features", copy, "--out", tmp_path / "run", "--task", "expr", *QUICK)
    assert code == 2 and "expr labels" in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_au_with_an_explicit_prompt_head_is_a_one_line_error(tiny_store, tmp_path):
    code, _, stderr = dva("fit", "--features", tiny_store, "--out", tmp_path / "run", "--task", "au", "--prompt", "learnable")
    assert code == 2 and "no prompt head" in stderr and "--prompt learnable" in stderr and len(stderr.strip().splitlines()) == 1, stderr
