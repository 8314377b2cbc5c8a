"""dva fit --task mtl (one model, VA's heads and EXPR's and AU's on the shared encoder and fusion): each loss over its own
frames, the task weights, P_MTL and its parts, the ablation's P_MTL intervals and the multi-task submission, on the
synthetic release (a full Aff-Wild2 store with its three label arrays); and the prompt setting each task takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dva.cli import app
from dva.data.tasks import AU_NAMES, MTL_LABELS, MTL_PRED
from tests.conftest import TASK_FIT as QUICK
from tests.conftest import constant_p_mtl


def dva(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def mtl_run(tiny_store, tmp_path_factory):
    """`dva fit --task mtl` with the defaults' prompt head (learnable, VA's regions): (run directory, report)."""
    out = tmp_path_factory.mktemp("mtl") / "run"
    code, stdout, stderr = dva("fit", "--features", tiny_store, "--out", out, "--task", "mtl", *QUICK, "--epochs", "4", "--patience", "4")
    assert code == 0, stderr
    return out, json.loads(stdout)


def test_each_task_takes_the_prompt_setting_that_fits_it():
    from dva.errors import ConfigError
    from dva.trainer.settings import FitSettings, settings_from

    assert FitSettings(task="au").prompt == "none" and settings_from(task="au").prompt == "none"
    assert FitSettings().prompt == FitSettings(task="expr").prompt == FitSettings(task="mtl").prompt == "learnable"
    with pytest.raises(ConfigError, match="no prompt head"):
        settings_from(task="au", prompt="learnable")
    with pytest.raises(ConfigError, match="three weights"):
        settings_from(task="mtl", task_weights="1,2")
    with pytest.raises(ConfigError, match="--task mtl"):
        settings_from(task="va", task_weighting="uncertainty")


def _mtl_model(weighting: str = "fixed"):
    from dva.trainer.model.compose import ModelSettings, VAModel

    torch.manual_seed(0)
    return VAModel(ModelSettings(modalities=("visual",), task="mtl", prompt="none", hidden=8, task_weighting=weighting), 6, 0)


def test_a_frame_with_va_labels_alone_gives_expr_and_au_no_gradient():
    from dva.trainer.model.losses import mtl_loss, mtl_parts
    from dva.trainer.settings import FitSettings

    settings = FitSettings(task="mtl", prompt="none")
    model, x = _mtl_model(), torch.randn(1, 6, 6)
    y = torch.full((1, 6, 15), float("nan"))
    y[0, :, MTL_LABELS["va"]] = torch.rand(6, 2) * 2 - 1  # VA on every frame, nothing else
    mask = torch.ones(1, 6, dtype=torch.bool)
    mtl_loss(model(visual=x), y, mask, settings).backward()
    assert all(p.grad is None or not p.grad.any() for p in [*model.expr_head.parameters(), *model.au_head.parameters()])
    assert model.regression.weight.grad.abs().sum() > 0
    # a batch of both: EXPR's loss reaches its scores only at the frames it labels, AU's likewise
    y[0, 2:4, MTL_LABELS["expr"]] = torch.tensor([[1.0], [5.0]])
    y[0, 4, MTL_LABELS["au"]] = torch.tensor([1.0, 0.0] * 6)
    out = model(visual=x)
    (_, expr, au), present = mtl_parts(out, y, mask, settings)
    expr_grad = torch.autograd.grad(expr, out["scores_expr"], retain_graph=True)[0][0].abs().sum(-1)
    au_grad = torch.autograd.grad(au, out["scores_au"])[0][0].abs().sum(-1)
    assert (expr_grad[[0, 1, 4, 5]] == 0).all() and (expr_grad[2:4] > 0).all()
    assert (au_grad[[0, 1, 2, 3, 5]] == 0).all() and au_grad[4] > 0 and [float(p) for p in present] == [1.0, 1.0, 1.0]


def test_uncertainty_weighting_is_learned_with_the_model():
    from dva.trainer.model.losses import mtl_loss, mtl_parts
    from dva.trainer.settings import FitSettings

    settings = FitSettings(task="mtl", prompt="none", task_weighting="uncertainty", task_weights="1,0.5,2")
    model = _mtl_model("uncertainty")
    x, y = torch.randn(2, 6, 6), torch.full((2, 6, 15), float("nan"))
    y[..., MTL_LABELS["va"]], y[..., MTL_LABELS["expr"]] = torch.rand(2, 6, 2) * 2 - 1, torch.randint(0, 8, (2, 6, 1)).float()
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        model.task_log_vars.copy_(torch.tensor([0.3, -0.2, 0.7]))
    out = model(visual=x)
    parts, present = mtl_parts(out, y, mask, settings)
    expected = sum(w * (torch.exp(-s) * part + p * s) for w, s, part, p in zip((1, 0.5, 2), model.task_log_vars, parts, present))
    assert float(mtl_loss(out, y, mask, settings).detach()) == pytest.approx(float(expected.detach())) and float(present[2]) == 0  # no AU label: no AU term
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.task_log_vars.detach().clone()
    mtl_loss(model(visual=x), y, mask, settings).backward()
    optimiser.step()
    moved = model.task_log_vars.detach() - before
    assert moved[0] != 0 and moved[1] != 0 and moved[2] == 0  # AU's s has nothing to weigh in this batch


def test_mtl_learns_above_the_constant_predictors_sum(mtl_run, tiny_store):
    from dva.trainer.fit import load_features

    out, report = mtl_run
    constant = constant_p_mtl(load_features(str(tiny_store), task="mtl").val.labels.numpy())
    best = report["best_val"]
    assert report["figure"] == "p_mtl" and best["p_mtl"] > constant + 0.3, (best, constant)
    assert best["p_mtl"] == pytest.approx((best["ccc_v"] + best["ccc_a"]) / 2 + best["expr_f1"] + best["au_f1"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["smooth_seconds"]) == {"valence", "arousal", "expression", "aus"} and list(metrics["thresholds"]) == list(AU_NAMES)
    assert metrics["task_weights"] == {"weighting": "fixed", "given": {"va": 1.0, "expr": 1.0, "au": 1.0}}
    assert json.loads((out / "config.json").read_text())["settings"]["prompt"] == "learnable"
    text = "\n".join(__import__("dva.cli.training", fromlist=["report_lines"]).report_lines(report))
    assert "P_MTL" in text and "EXPR F1" in text and "AU F1" in text and "CCC_V" in text


def test_uncertainty_weighting_trains_its_weights_in_a_fit(tiny_store, tmp_path):
    code, stdout, stderr = dva("fit", "--features", tiny_store, "--out", tmp_path / "run", "--task", "mtl", "--prompt", "none", "--modalities", "visual",
                               "--task-weighting", "uncertainty", "--task-weights", "1,1,0.5", *QUICK, "--epochs", "2", "--hidden", "16")
    assert code == 0, stderr
    weights = json.loads((tmp_path / "run" / "metrics.json").read_text())["task_weights"]
    assert weights["weighting"] == "uncertainty" and weights["given"]["au"] == 0.5
    assert all(abs(s) > 1e-4 for s in weights["log_variance"].values()), weights  # each s moved from 0
    assert weights["factor"]["va"] == pytest.approx(np.exp(-weights["log_variance"]["va"]))


def test_the_paired_bootstrap_of_p_mtl_sums_the_three_recomputed_on_the_drawn_videos():
    from dva.trainer.evaluate import mtl_scores
    from dva.trainer.paired import figure, mtl_reduced, paired_difference, resample_counts, resampled_p_mtl

    rng = np.random.default_rng(0)
    n, videos = 300, np.repeat([f"v{k}" for k in range(10)], 30)
    labels = np.full((n, 15), np.nan, np.float32)
    labels[:200, :2] = rng.uniform(-1, 1, (200, 2))
    labels[100:, 2] = rng.integers(0, 8, 200)
    labels[50:250, 3:] = rng.integers(0, 2, (200, 12))
    pred = rng.uniform(0, 1, (n, 22)).astype(np.float32)
    pred[:, :2] = np.nan_to_num(labels[:, :2]) * 0.5 + rng.normal(0, 0.3, (n, 2))
    assert figure(pred, labels) == pytest.approx(mtl_scores(pred, labels)["p_mtl"])
    index = np.unique(videos, return_inverse=True)[1]
    everyone = np.ones((1, 10))  # the resample that draws each video once is the split itself
    assert resampled_p_mtl(mtl_reduced(pred, labels, index, 10), everyone)[0] == pytest.approx(figure(pred, labels))
    counts = resample_counts(10, 1)
    drawn = np.repeat(np.arange(10), counts[0].astype(int))
    rows = np.concatenate([np.flatnonzero(index == v) for v in drawn])
    assert resampled_p_mtl(mtl_reduced(pred, labels, index, 10), counts)[0] == pytest.approx(figure(pred[rows], labels[rows]))
    better = pred.copy()
    better[:, :2] = np.nan_to_num(labels[:, :2])
    paired = paired_difference(pred, better, labels, videos, resamples=200)
    assert paired.diff == pytest.approx(figure(better, labels) - figure(pred, labels)) and 0 < paired.low <= paired.diff <= paired.high


def test_ablate_ranks_mtl_variants_by_p_mtl_with_intervals(tiny_store, tmp_path):
    from dva.trainer.ablate import read_results

    out = tmp_path / "ablate"
    code, stdout, stderr = dva("ablate", "--features", tiny_store, "--out", out, "--set", "task=mtl", "--set", "prompt=none", "--set", "modalities=visual",
                               "--set", "epochs=1", "--set", "hidden=16", "--set", "seq_len=32", "--set", "stride=16", "--set", "batch_size=16",
                               "--grid", "temporal=gru,transformer", "--json")
    assert code == 0, stderr
    rows = json.loads(stdout)
    assert [r["variant"] for r in rows] == sorted((r["variant"] for r in rows), key=lambda v: -next(r["p_mtl"] for r in rows if r["variant"] == v))
    other = next(r for r in rows if r["variant"] == "temporal=transformer")
    assert other["ci_low"] <= other["diff"] <= other["ci_high"] and np.isfinite(other["diff"]), other
    for r in rows:
        assert r["p_mtl"] == pytest.approx((r["ccc_v"] + r["ccc_a"]) / 2 + r["expr_f1"] + r["au_f1"])
    assert all(row["p_mtl"] for row in read_results(out / "results.csv").values())
    table = (out / "results.md").read_text()
    assert "P_MTL" in table and "ΔP_MTL vs baseline" in table


def _test_list(tmp_path, header: str | None = None):
    """A multi-task test list over the synthetic release's test tracks: images of both, interleaved (a list's order is
    not the store's), some frames skipped."""
    rows = [f"{track}/{frame:05d}.jpg" for frame in range(1, 60, 4) for track in ("synth_201", "synth_200")]
    path = tmp_path / "MTL_Challenge_test_set_release.txt"
    path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return path, rows


def test_predict_writes_a_checked_mtl_submission_in_the_lists_rows(mtl_run, tiny_store, tmp_path):
    run, _ = mtl_run
    listed, rows = _test_list(tmp_path, "image_location,valence,arousal,expression,aus")
    code, stdout, stderr = dva("predict", "--run", run, "--features", tiny_store, "--split", "test", "--sample", listed, "--out", tmp_path / "sub.txt")
    assert code == 0, stderr
    assert f"checked against {listed.name}: {len(rows)} rows, same order" in stdout
    lines = (tmp_path / "sub.txt").read_text().splitlines()
    assert lines[0] == "image_location,valence,arousal,expression,aus"  # the sample's own header
    cells = [line.split(",") for line in lines[1:]]
    assert [c[0] for c in cells] == rows and all(len(c) == 16 for c in cells)
    assert all(-1 <= float(c[1]) <= 1 and -1 <= float(c[2]) <= 1 and c[3] in list("01234567") and set(c[4:]) <= {"0", "1"} for c in cells)
    plain, _ = _test_list(tmp_path)
    code, _, stderr = dva("predict", "--run", run, "--features", tiny_store, "--split", "test", "--sample", plain, "--out", tmp_path / "plain.txt")
    assert code == 0 and (tmp_path / "plain.txt").read_text().splitlines()[0] == "image,valence,arousal,expression,aus", stderr


def test_an_mtl_submission_of_a_full_store_or_of_images_not_stored_is_a_one_line_error(mtl_run, tiny_store, tmp_path):
    run, _ = mtl_run
    code, _, stderr = dva("predict", "--run", run, "--features", tiny_store, "--split", "test", "--out", tmp_path / "sub.txt")
    assert code == 2 and "not an s-Aff-Wild2 store" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    listed = tmp_path / "list.txt"
    listed.write_text("synth_200/00001.jpg\nsynth_200/09999.jpg\n")
    code, _, stderr = dva("predict", "--run", run, "--features", tiny_store, "--split", "test", "--sample", listed, "--out", tmp_path / "sub.txt")
    assert code == 2 and "synth_200/09999.jpg" in stderr and not (tmp_path / "sub.txt").exists(), stderr


def test_per_frame_csvs_of_an_mtl_run_hold_all_three_tasks_columns(mtl_run, tiny_store, tmp_path):
    from dva.trainer.results.submission import csv_columns

    run, _ = mtl_run
    code, _, stderr = dva("predict", "--run", run, "--features", tiny_store, "--split", "test", "--format", "csv", "--out", tmp_path / "csv")
    assert code == 0, stderr
    written = sorted((tmp_path / "csv").glob("*.csv"))
    assert written
    header = written[0].read_text().splitlines()[0].split(",")
    assert header == ["frame", "time", *csv_columns(("va", "expr", "au")), "face"]


def test_mtl_trains_on_the_visual_sets_alone_of_a_store_without_audio(tiny_store, tmp_path):
    import shutil

    from dva.stores import open_store
    from tests.conftest import TINY_AUDIO

    copy = tmp_path / "images-only"
    shutil.copytree(tiny_store, copy)
    with open_store(str(copy), "a") as store:  # as an s-Aff-Wild2 store: no audio set
        store.set_attrs({"feature_sets": {k: v for k, v in store.feature_sets().items() if k != TINY_AUDIO}})
    code, _, stderr = dva("fit", "--features", copy, "--out", tmp_path / "run", "--task", "mtl", "--prompt", "none", *QUICK, "--epochs", "1", "--hidden", "16")
    assert code == 0, stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["modalities"] == "visual"
    code, _, stderr = dva("fit", "--features", copy, "--out", tmp_path / "va", "--prompt", "none", *QUICK, "--epochs", "1")
    assert code == 2 and "no audio feature set" in stderr  # VA as it always was: --modalities visual is the user's to say


def test_predict_video_of_an_mtl_run_writes_the_three_tasks_columns_from_one_model(mtl_run, people, tmp_path):
    pytest.importorskip("dlib", reason="the face stage needs dva[faces]")
    from dva.trainer.results.submission import csv_columns

    run, _ = mtl_run
    code, stdout, stderr = dva("predict", "--video", people / "talking.mp4", "--run", run, "--out", tmp_path / "out", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["tasks"] == ["mtl"] and list(report["tracks"]) == ["talking"]
    lines = (tmp_path / "out" / "talking.csv").read_text().splitlines()
    assert lines[0].split(",") == ["frame", "time", *csv_columns(("va", "expr", "au")), "face"] and len(lines) == 121
    assert (tmp_path / "out" / "talking.png").is_file()
