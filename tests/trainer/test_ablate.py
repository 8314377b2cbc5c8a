"""`dva ablate` keys each result by every setting and the store: reruns train only what is new."""

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from dva.errors import ConfigError
from dva.trainer import tasks as tasks_module
from dva.trainer.ablate import DIFF_FIELDS, VA_LEDGER, ablate, plan_jobs, result_key, store_identity
from dva.trainer.compare import kept
from dva.trainer.paired import figure
from dva.trainer.settings import FitSettings

TINY = dict(epochs=1, patience=1, hidden=16, prompt="none", seq_len=32, stride=32, batch_size=16)


def rows(out):
    with (out / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_same_ablation_twice_trains_nothing_the_second_time(tiny_store, tmp_path, monkeypatch):
    base, grid = FitSettings(features=str(tiny_store), **TINY), {"fusion": ["concat", "gated"]}
    first = ablate(base, grid, seeds=1, out=tmp_path, progress=False)
    assert len(rows(tmp_path)) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun of the same ablation must not load or train")

    monkeypatch.setattr(tasks_module, "load_features", no_training)
    monkeypatch.setattr(tasks_module, "train", no_training)
    monkeypatch.setattr(tasks_module, "train_fold", no_training)
    again = ablate(base, grid, seeds=1, out=tmp_path, progress=False)
    assert again == first and len(rows(tmp_path)) == 2


def test_another_set_value_trains_new_variants_and_shows_only_their_numbers(tiny_store, tmp_path):
    grid = {"fusion": ["concat", "gated"]}
    ablate(FitSettings(features=str(tiny_store), lr=1e-3, **TINY), grid, seeds=1, out=tmp_path, progress=False)
    summary = ablate(FitSettings(features=str(tiny_store), lr=1e-2, **TINY), grid, seeds=1, out=tmp_path, progress=False)
    written = rows(tmp_path)
    assert len(written) == 4 and len({row["key"] for row in written}) == 4
    new = {row["variant"]: float(row["p_va"]) for row in written[2:]}
    assert {e["variant"]: e["p_va"] for e in summary} == pytest.approx(new, abs=1e-6, nan_ok=True)  # one seed: its own ensemble
    assert all(e["seeds"] == 1 for e in summary)  # the lr=1e-3 rows are not mixed in
    assert '"lr": 0.01' in written[2]["settings"] and '"lr": 0.001' in written[0]["settings"]
    table = (tmp_path / "results.md").read_text()
    assert table.count("| fusion=") == 2


def test_the_key_covers_settings_and_store_but_not_where_results_go(tiny_store, tmp_path):
    store = store_identity(str(tiny_store))
    base = FitSettings(features=str(tiny_store), **TINY)
    key = result_key(base, store)
    assert result_key(FitSettings(features=str(tiny_store) + "/", out="elsewhere", device="cpu", **TINY), store_identity(str(tiny_store) + "/")) == key
    assert result_key(FitSettings(features=str(tiny_store), **{**TINY, "hidden": 8}), store) != key
    assert result_key(base, {**store, "visual_encoder": {"model": "another"}}) != key
    assert result_key(FitSettings(features=str(tiny_store), sigma=1, **TINY), store) == result_key(FitSettings(features=str(tiny_store), sigma=1.0, **TINY), store)
    assert [job.seed for job in plan_jobs(base, {}, 2, store)] == [0, 1]


def test_an_older_results_csv_without_keys_is_set_aside_with_one_warning_line(tiny_store, tmp_path):
    from dva.cli import app

    old = "variant,seed,epoch,ccc_v,ccc_a,p_va,seconds\nfusion=concat,0,1,0.9,0.9,0.9,1.0\n"
    (tmp_path / "results.csv").write_text(old)
    flags = [f"--set={key}={value}" for key, value in TINY.items()]
    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--grid", "fusion=concat", *flags, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("dva: warning:")]
    assert len(warning_lines) == 1 and "no key column" in warning_lines[0]
    assert (tmp_path / "results.unkeyed.csv").read_text() == old
    assert len(rows(tmp_path)) == 1 and rows(tmp_path)[0]["p_va"] != "0.9"  # retrained, the unkeyed 0.9 not reported


def test_labels_and_readout_are_separate_axes_six_rows(tiny_store, tmp_path):
    from dva.cli import app

    flags = [f"--set={key}={value}" for key, value in {**TINY, "prompt": "learnable"}.items()]
    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--grid", "labels=soft,hard",
                                      "--grid", "readout=regression,prompt,blend", *flags, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("| labels=")]
    assert len(table) == 6
    assert {line.split(" |")[0][2:] for line in table} == {f"labels={l} readout={r}" for l in ("soft", "hard") for r in ("regression", "prompt", "blend")}
    written = rows(tmp_path)
    assert len({row["p_va"] for row in written}) == 6  # six different models, not one reported six times


def test_ablate_with_folds_ranks_by_out_of_fold_p_va_over_seeds(tiny_store, tmp_path):
    from dva.cli import app

    flags = [f"--set={key}={value}" for key, value in TINY.items()]
    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--folds", "2", "--seeds", "2", "--grid", "fusion=gated",
                                      *flags, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "oof: out of fold" in result.stdout and "shown and ranked" in result.stdout
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("| fusion=gated")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[1:3] == ["2", "oof"]
    written = rows(tmp_path)
    assert [row["figure"] for row in written] == ["oof", "oof"] and len(written[0]["epoch"].split("/")) == 2
    assert "each fold's epoch chosen on the other folds" in result.stdout
    assert float(cells[6].split(" ± ")[1]) > 0 and cells[7] == "baseline"  # two seeds, two different fold cuts and models
    from dva.stores import open_store

    with open_store(str(tiny_store), "r") as store:
        pooled = sorted([*store.track_index("train"), *store.track_index("val")])
    for row in written:  # each seed's out-of-fold predictions kept: every train+val track once, the frames its figure was computed on
        held = kept(tmp_path, row["key"])
        assert sorted(held.tracks) == pooled and figure(held.pred, held.labels) == pytest.approx(float(row["p_va"]), abs=1e-6)


def test_ablate_refuses_a_grid_with_nothing_held_out(tiny_store, tmp_path):
    with pytest.raises(ConfigError, match="held-out figure"):
        ablate(FitSettings(features=str(tiny_store), train_splits="train,val", **TINY), {}, seeds=1, out=tmp_path, progress=False)


def test_the_chart_shows_each_variants_ensemble_figure_with_each_seeds_own_as_a_dot(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from dva.trainer.ablate import plot_summary, summarise
    from dva.trainer.compare import Held

    drawn, dots, titles = [], [], []
    real_barh, real_plot, real_set = Axes.barh, Axes.plot, Axes.set
    monkeypatch.setattr(Axes, "barh", lambda self, y, width, **k: drawn.append(list(width)) or real_barh(self, y, width, **k))
    monkeypatch.setattr(Axes, "plot", lambda self, x, y, *a, **k: dots.append(sorted(x)) or real_plot(self, x, y, *a, **k))
    monkeypatch.setattr(Axes, "set", lambda self, **k: titles.append(k) or real_set(self, **k))
    labels = np.array([[0.1, 0.2], [0.5, -0.3], [-0.4, 0.6]], dtype=np.float32)
    held = Held(["t"], ["t"], np.array([0, 3]), labels * 0.5, labels)  # the ensemble: CCC 0.8 on both dimensions
    rows = [{"variant": "v", "figure": "oof", "ccc_v": c, "ccc_a": c, "p_va": c} for c in (0.5, 0.7)]
    plot_summary(tmp_path / "chart.png", summarise(rows, "va", {"v": held}))
    ensemble = 2 * 0.5 * labels[:, 0].var() / (0.25 * labels[:, 0].var() + labels[:, 0].var() + (0.5 * labels[:, 0].mean() - labels[:, 0].mean()) ** 2)
    assert (tmp_path / "chart.png").is_file() and len(drawn) == 3 and drawn[0] == [pytest.approx(ensemble)]
    assert dots == [[0.5, 0.7]] * 3  # each seed's own figure
    assert any("oof" in k.get("title", "") and "ensemble" in k.get("title", "") and "2 seeds" in k.get("xlabel", "") for k in titles)


@pytest.fixture(scope="module")
def against_gated(tiny_store, tmp_path_factory):
    """`dva ablate --grid fusion=concat,gated,xattn --baseline fusion=gated` on the tiny store: (out, result)."""
    from dva.cli import app

    out = tmp_path_factory.mktemp("paired")
    flags = [f"--set={key}={value}" for key, value in TINY.items()]
    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--grid", "fusion=concat,gated,xattn", "--baseline", "fusion=gated",
                                      *flags, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_every_row_but_the_named_baseline_gets_its_paired_difference_and_interval(against_gated):
    out, result = against_gated
    written = {row["variant"]: row for row in rows(out)}
    assert set(DIFF_FIELDS) <= set(next(iter(written.values())))
    assert [written["fusion=gated"][f] for f in DIFF_FIELDS] == ["", "", ""]
    for other in ("fusion=concat", "fusion=xattn"):
        diff, low, high = (float(written[other][f]) for f in DIFF_FIELDS)
        assert low <= diff <= high and low < high
        # one seed: the difference is the two rows' own best_val figures, from the predictions they were scored on
        assert diff == pytest.approx(float(written[other]["p_va"]) - float(written["fusion=gated"]["p_va"]), abs=1e-6)
    table = (out / "results.md").read_text()
    assert result.stdout.startswith(table)
    assert "paired bootstrap interval" in table and "minus the baseline's (fusion=gated)" in table
    (line,) = [line for line in table.splitlines() if line.startswith("| fusion=gated |")]
    assert line.rstrip(" |").endswith("baseline")
    (line,) = [line for line in table.splitlines() if line.startswith("| fusion=concat |")]
    assert line.split("|")[-2].strip().startswith(f"{float(written['fusion=concat']['diff']):+.4f}".replace("-", "−") + " [")


def test_resuming_rows_without_kept_predictions_trains_nothing_and_says_why_there_is_no_interval(against_gated, tiny_store, tmp_path, monkeypatch):
    import shutil

    out, _ = against_gated
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "predictions")  # as an older dva left them: rows without predictions, no diff columns
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=VA_LEDGER, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows(out))
    monkeypatch.setattr(tasks_module, "train", lambda *a, **k: pytest.fail("a row without predictions must not train again"))
    summary = ablate(FitSettings(features=str(tiny_store), **TINY), {"fusion": ["concat", "gated", "xattn"]}, seeds=1, out=tmp_path, progress=False, baseline={"fusion": "gated"})
    assert [e["diff"] for e in summary] == [None] * 3 and not (tmp_path / "results.unkeyed.csv").exists()
    assert all(row[f] == "" for row in rows(tmp_path) for f in DIFF_FIELDS) and len(rows(tmp_path)) == 3
    table = (tmp_path / "results.md").read_text()
    assert table.count("— [") == 2 and "the baseline has no kept predictions" in table


@pytest.mark.parametrize("baseline, message", [("fusion=xattn", "--baseline fusion=xattn: not a value of the grid (fusion: concat, gated)"),
                                               ("sigma=0.3", "--baseline sigma=0.3: sigma is not a --grid axis (the axes: fusion)")])
def test_a_baseline_outside_the_grid_is_one_line_and_exit_2(tiny_store, tmp_path, baseline, message):
    from dva.cli import app

    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--grid", "fusion=concat,gated", "--baseline", baseline, "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"dva: error: {message}"]
    assert not (tmp_path / "results.csv").exists()


def test_settings_added_since_keys_began_leave_a_default_result_its_old_key():
    """A result written before --temporal, --mse-weight, ... existed was made with their defaults: its key, the sha256
    of the settings it knew (computed here by hand, as dva 0.2 wrote it), is the key of the same run today."""
    import dataclasses
    import hashlib
    import json

    from dva.trainer.ablate import KEYED_WHEN_SET, NOT_IN_KEY

    settings, store = FitSettings(seed=3), {"store": "s"}
    known = {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_IN_KEY and k not in KEYED_WHEN_SET}
    old = hashlib.sha256(json.dumps({"settings": known, "store": store}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert result_key(settings, store) == old
    assert result_key(dataclasses.replace(settings, temporal="tcn"), store) != old


def test_an_expr_ablation_ranks_by_expr_f1_and_compares_each_row_in_it(tiny_store, tmp_path):
    """`dva ablate --set task=expr`: the rows carry EXPR's macro F1 (no CCC), the table ranks by it, and each row's
    difference is its EXPR F1 minus the baseline's, from the predictions kept for it."""
    from dva.cli import app

    flags = [f"--set={key}={value}" for key, value in TINY.items()]
    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--set", "task=expr", "--grid", "fusion=concat,gated", *flags, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {row["variant"]: row for row in rows(tmp_path)}
    assert all(row["expr_f1"] and not row["p_va"] and not row["au_f1"] for row in written.values())
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("shown and ranked: each variant's seed ensemble") and "| variant | seeds | figure | EXPR F1 | seeds' EXPR F1 | ΔEXPR F1 vs baseline [95% CI] |" in table
    ranked = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| fusion=")]
    assert ranked == sorted(written, key=lambda v: -float(written[v]["expr_f1"]))
    held = kept(tmp_path, written["fusion=gated"]["key"])
    assert held.pred.shape[1] == 8 and held.labels.shape[1] == 1
    assert figure(held.pred, held.labels) == pytest.approx(float(written["fusion=gated"]["expr_f1"]), abs=1e-6)
    assert float(written["fusion=gated"]["diff"]) == pytest.approx(float(written["fusion=gated"]["expr_f1"]) - float(written["fusion=concat"]["expr_f1"]), abs=1e-6)


def test_a_grid_over_tasks_is_one_line_and_exit_2(tiny_store, tmp_path):
    from dva.cli import app

    result = CliRunner().invoke(app, ["ablate", "--features", str(tiny_store), "--grid", "task=va,expr", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == ["dva: error: --grid task=va,expr: one task per ablation (each ranks by its own figure); run dva ablate once per task, e.g. --set task=expr"]


@pytest.mark.parametrize("older", ["va_only", "before_the_ensemble_columns"])
def test_a_results_csv_of_an_earlier_header_keeps_its_rows_under_todays_columns_its_oof_read_as_selected(tmp_path, older):
    """results.csv as dva wrote it before EXPR and AU (diff_p_va, no F1 columns), or before the ensemble and videos
    columns: read as it is, its rows kept; a row's oof then was selected on the frames it scored: oof_selected now."""
    from dva.trainer.ablate import CSV_FIELDS, LEDGER_FIELDS, set_aside_unkeyed

    path = tmp_path / "results.csv"
    header = [*VA_LEDGER, "diff_p_va", "ci_low", "ci_high"] if older == "va_only" else [*LEDGER_FIELDS, *DIFF_FIELDS]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerow({**{k: "" for k in header}, "key": "0123456789abcdef", "variant": "fusion=gated", "figure": "oof", "p_va": "0.5", "ci_low": "0.01"})
        writer.writerow({**{k: "" for k in header}, "key": "fedcba9876543210", "variant": "fusion=concat", "figure": "best_val", "p_va": "0.4"})
    set_aside_unkeyed(path)
    first, second = rows(tmp_path)
    assert tuple(first) == CSV_FIELDS and (first["key"], first["p_va"], first["expr_f1"], first["figure"]) == ("0123456789abcdef", "0.5", "", "oof_selected")
    assert second["figure"] == "best_val" and first["ensemble"] == first["videos"] == ""
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_track_another_task_trains_on_enters_the_store_identity_and_the_left_out_line_wherever_stored(tiny_store, tmp_path):
    """A track stored under test (its VA split) that AU trains on: finishing or losing its sets changes which results an
    AU ablation may reuse, and when incomplete it is named among AU's train tracks left out, not VA's."""
    import shutil
    import warnings

    import zarr

    from dva.trainer.loading.store import left_out_in_store

    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    before = store_identity(str(copy))
    assert "elsewhere" not in before["complete_sets"]  # a store without such tracks keeps the identity it always had
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(copy), mode="r+")["test"]["synth_200"]
        group.attrs.update({"tasks": {"va": "test", "au": "train"}})
    identity = store_identity(str(copy))
    assert list(identity["complete_sets"]["elsewhere"]) == ["test/synth_200"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group.attrs.update({"complete": {}})  # as a half-written track records it
    assert store_identity(str(copy)) != identity
    from dva.stores import open_store

    with open_store(str(copy), "r") as store:
        au_train = len(store.task_tracks("au", "train"))
    line = left_out_in_store(str(copy), [(None, None, ("visual", "audio"))], task="au")
    assert line.startswith(f"train: 1 of {au_train} tracks left out") and "synth_200 (incomplete" in line
    assert left_out_in_store(str(copy), [(None, None, ("visual", "audio"))]) is None  # VA trains on none of test


def constructed_predictions(task: str, videos: int, seed: int = 0):
    """Labels of `videos` videos (40 frames each) and two variants' predictions for seeds 0 and 1: `variant=a`'s seeds
    agree exactly (one prediction, moderately good); `variant=b`'s seeds disagree (the truth plus independent heavy
    noise each), so each of b's seeds scores low while their average, with half the noise, scores high."""
    rng = np.random.default_rng(seed)
    n = 40 * videos
    if task == "va":
        labels = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        good = labels * 0.6 + rng.normal(0, 0.55, (n, 2))
        noisy = [labels + rng.normal(0, 0.9, (n, 2)) for _ in range(2)]
    elif task == "expr":
        labels = rng.integers(0, 8, (n, 1)).astype(np.float32)
        signal = np.eye(8)[labels[:, 0].astype(int)]
        good = signal + rng.normal(0, 0.85, (n, 8))
        noisy = [signal + rng.normal(0, 1.0, (n, 8)) for _ in range(2)]
    else:
        labels = rng.integers(0, 2, (n, 12)).astype(np.float32)
        good = 1 / (1 + np.exp(-(2 * labels - 1 + rng.normal(0, 1.5, (n, 12)))))
        noisy = [1 / (1 + np.exp(-(2 * labels - 1 + rng.normal(0, 1.8, (n, 12))))) for _ in range(2)]
    return labels, {"variant=a": [good, good], "variant=b": noisy}


@pytest.mark.parametrize("task, videos", [("va", 12), ("va", 6), ("expr", 12), ("au", 6)])
def test_a_variant_whose_seeds_disagree_is_shown_ranked_and_compared_on_its_seed_ensemble(tmp_path, task, videos):
    """The table shows and ranks each variant's seed ensemble, its Δ is exactly the difference of the shown figures, the
    seeds' std is the sample std (ddof=1), and an interval over fewer than 10 videos says so in its cell and in results.csv."""
    from dva.trainer.ablate import TASK_METRICS, Job, append_row, write_summaries
    from dva.trainer.compare import Held, keep
    from dva.trainer.paired import scores

    labels, predictions = constructed_predictions(task, videos)
    tracks = [f"video{v}" for v in range(videos)]
    offsets = np.arange(0, 40 * videos + 1, 40)
    metrics, jobs = TASK_METRICS[task], []
    for variant, seeds in predictions.items():
        for seed, pred in enumerate(seeds):
            job = Job(variant, seed, FitSettings(task=task), f"{variant[-1]}{seed}")
            keep(tmp_path, job.key, Held(tracks, tracks, offsets, pred.astype(np.float32), labels))
            append_row(tmp_path / "results.csv", {"key": job.key, "variant": variant, "seed": seed, "figure": "best_val", "epoch": 1,
                                                  **scores(pred.astype(np.float32), labels), "seconds": 1, "settings": "{}"})
            jobs.append(job)
    summary = write_summaries(tmp_path, jobs, task, "variant=a")
    ranked = metrics[-1]
    ensemble = {v: scores(np.mean([p.astype(np.float32) for p in seeds], axis=0, dtype=np.float64).astype(np.float32), labels)[ranked]
                for v, seeds in predictions.items()}
    per_seed = {v: [scores(p.astype(np.float32), labels)[ranked] for p in seeds] for v, seeds in predictions.items()}
    assert ensemble["variant=b"] > ensemble["variant=a"] and max(per_seed["variant=b"]) < ensemble["variant=b"]  # the construction holds
    if task == "va":  # the mean over seeds would rank them the other way round
        assert np.mean(per_seed["variant=b"]) < np.mean(per_seed["variant=a"])
    entries = {e["variant"]: e for e in summary}
    assert [e["variant"] for e in summary] == ["variant=b", "variant=a"]  # ranked by the ensemble
    assert entries["variant=b"][ranked] == pytest.approx(ensemble["variant=b"], abs=1e-9)
    assert entries["variant=b"]["diff"] == entries["variant=b"][ranked] - entries["variant=a"][ranked]  # exactly the shown difference
    assert entries["variant=b"][ranked + "_seed_std"] == pytest.approx(np.std(per_seed["variant=b"], ddof=1))
    assert entries["variant=b"][ranked + "_seed_mean"] == pytest.approx(np.mean(per_seed["variant=b"]))
    written = {row["variant"]: row for row in rows(tmp_path)}
    assert float(written["variant=b"]["diff"]) == pytest.approx(float(written["variant=b"]["ensemble"]) - float(written["variant=a"]["ensemble"]), abs=1e-12)
    assert (written["variant=b"]["videos"], written["variant=b"]["few_videos"]) == (str(videos), "yes" if videos < 10 else "no")
    assert written["variant=a"]["diff"] == "" and written["variant=a"]["ensemble"] != ""
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("shown and ranked: each variant's seed ensemble") and "sample std over seeds (ddof=1)" in table.splitlines()[0]
    (line,) = [line for line in table.splitlines() if line.startswith("| variant=b |")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    shown = float(cells[2 + len(metrics)])
    std = np.std(per_seed["variant=b"], ddof=1)
    assert shown == pytest.approx(ensemble["variant=b"], abs=5e-5) and cells[3 + len(metrics)] == f"{np.mean(per_seed['variant=b']):.4f} ± {std:.4f}"
    assert cells[-1].startswith(f"{entries['variant=b']['diff']:+.4f}".replace("-", "−"))
    assert (f"{videos} videos: too few to trust" in cells[-1]) == (videos < 10)
