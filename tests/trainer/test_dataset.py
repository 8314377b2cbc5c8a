"""dva's Python API for a model of one's own: a split as tensors (the trainer's own load), windows over it as a torch
Dataset, per-window predictions stitched back to frames, the figures `dva fit` reports, and the submission file that
`dva predict` writes, from the same per-frame predictions."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import dva
from dva.errors import ConfigError, DataError, DvaWarning
from dva.stores import open_store
from tests.conftest import TINY_AUDIO

REPO = Path(dva.__file__).resolve().parents[1]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.nan_to_num(-9.0), b.nan_to_num(-9.0))


def assert_same_split(ours, theirs):
    assert ours.tracks == theirs.tracks and np.array_equal(ours.offsets, theirs.offsets)
    for name in ("visual", "visual_mask", "audio_mask", "labels", "label_mask"):
        assert same(getattr(ours, name), getattr(theirs, name)), name
    frames = torch.arange(ours.n_frames)[ours.audio_mask]  # a frame without sound reads any row: masked, never used
    assert torch.equal(ours.audio_at(frames), theirs.audio_at(frames))


def test_read_split_of_train_val_and_test_is_what_fit_and_predict_load(tiny_store):
    from dva.trainer.fit import load_features
    from dva.trainer.loading.store import choose_sets, load_split

    for task in ("va", "expr"):
        features = load_features(str(tiny_store), task=task)
        for split in ("train", "val"):
            data = dva.read_split(tiny_store, split, task=task)
            assert_same_split(data, getattr(features, split))
            assert data.source == {"store": str(tiny_store), "split": split, "task": task, "sets": features.provenance["sets"],
                                   "audio_align": "nearest", "modalities": ["visual", "audio"]}
    with open_store(tiny_store) as store:  # an open store is read as it is and left open
        sets = choose_sets(store.feature_sets(), None, None, ("visual", "audio"), str(tiny_store))
        for task, load_task in (("va", None), ("expr", "expr")):  # dva predict's load: VA's test as stored, EXPR's its challenge's test tracks
            test = dva.read_split(store, "test", task=task)
            assert_same_split(test, load_split(store, "test", sets, task=load_task))
            assert test.label_mask.sum() == 0 and test.source["task"] == task
        assert store.splits()
    visual_only = dva.read_split(tiny_store, "val", modalities="visual")
    assert visual_only.audio_dim == 0 and visual_only.source["sets"]["audio"] == []


@pytest.mark.parametrize("bad, says", [({"split": "nope"}, "has no 'nope' split"), ({"task": "nope"}, "--task must be one of"),
                                       ({"visual_features": "nope"}, "no such visual feature set"), ({"modalities": "smell"}, "modalities must be")])
def test_read_split_refuses_a_split_task_or_set_the_store_lacks_in_one_line(tiny_store, bad, says):
    with pytest.raises(dva.DvaError, match=says) as refused:
        dva.read_split(tiny_store, **bad)
    assert "\n" not in str(refused.value)


def test_window_items_are_the_trainers_gathers_normalised_and_a_dataloader_batches_them(tiny_store):
    from dva.trainer.evaluate import normalise_batch
    from dva.trainer.loading.windows import gather, window_index

    train = dva.read_split(tiny_store, "train")
    normaliser = dva.Normaliser.fit(train)
    windows = dva.WindowDataset(train, seq_len=32, stride=16, normaliser=normaliser)
    index, inside = window_index(train.offsets, 32, 16)
    assert len(windows) == index.shape[0] > len(train.tracks)
    for i in (0, 5, len(windows) - 1):
        item = windows[i]
        expected = normalise_batch(gather(train, index[i : i + 1], inside[i : i + 1]), normaliser)
        for name in ("visual", "visual_mask", "audio", "audio_mask", "labels", "label_mask"):
            assert same(item[name], expected[name][0]), name
        assert torch.equal(item["frames"], index[i]) and torch.equal(item["inside"], inside[i]) and int(item["window"]) == i
        assert item["visual"].dtype == item["audio"].dtype == item["labels"].dtype == torch.float32
    raw = dva.WindowDataset(train, seq_len=32, stride=16)[3]  # without a normaliser: the features as gathered
    assert torch.equal(raw["visual"], gather(train, index[3:4], inside[3:4])["visual"][0])
    with pytest.raises(IndexError):
        windows[len(windows)]
    batch = next(iter(torch.utils.data.DataLoader(windows, batch_size=8, shuffle=True)))
    shapes = {name: tuple(value.shape) for name, value in batch.items()}
    assert shapes == {"visual": (8, 32, train.visual_dim), "visual_mask": (8, 32), "audio": (8, 32, train.audio_dim), "audio_mask": (8, 32),
                      "labels": (8, 32, 2), "label_mask": (8, 32), "frames": (8, 32), "inside": (8, 32), "window": (8,)}
    again = windows.batch(batch["window"])  # the batched gather is the items one by one
    assert all(same(batch[name], again[name]) for name in batch)


def run_windows(model, settings, windows, shuffle: bool):
    """The run's model over a WindowDataset through a DataLoader: (per-window values [W, L, C], the window of each row)."""
    from dva.trainer.evaluate import model_inputs
    from dva.trainer.model.heads import frame_values

    model.eval()
    preds, order = [], []
    with torch.no_grad():
        text = model.text_features()
        for batch in torch.utils.data.DataLoader(windows, batch_size=16, shuffle=shuffle, generator=torch.Generator().manual_seed(0)):
            preds.append(frame_values(settings.task, model(**model_inputs(settings, batch), text=text)).float())
            order.append(batch["window"])
    return torch.cat(preds), torch.cat(order)


def test_stitched_window_predictions_are_predict_frames_and_score_is_the_runs_best_val(run_dir, tiny_store):
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.results.run_dir import load_run

    run, report = run_dir
    settings, model, normaliser, _ = load_run(run, "cpu")
    val = dva.read_split(tiny_store, "val")
    expected = predict_frames(model, settings, val, normaliser=normaliser)
    windows = dva.WindowDataset(val, seq_len=settings.seq_len, stride=settings.seq_len // 2, normaliser=normaliser)  # evaluation's windows
    pred, order = run_windows(model, settings, windows, shuffle=True)
    assert not torch.equal(order, torch.arange(len(windows)))  # shuffled: put back by each row's window
    frames = windows.to_frames(pred, windows=order, stitch=settings.stitch)
    assert frames.shape == expected.shape == (val.n_frames, 2) and np.allclose(frames, expected, atol=1e-6)
    ordered = torch.empty_like(pred)
    ordered[order] = pred
    assert np.array_equal(windows.to_frames(ordered, stitch=settings.stitch), frames)
    scores = dva.score(frames, val)
    best = json.loads((run / "metrics.json").read_text())["best_val"]
    assert scores["p_va"] == pytest.approx(best["p_va"], abs=1e-5) == pytest.approx(report["best_val"]["p_va"], abs=1e-5)
    assert scores["ccc_v"] == pytest.approx(best["ccc_v"], abs=1e-5) and set(scores["per_track"]) == set(val.tracks)
    assert json.loads(json.dumps(scores)) == scores  # plain data
    with pytest.raises(ConfigError, match="per-frame predictions"):
        dva.score(frames[:-1], val)


def cli(*args):
    """`dva ARGS` in this process (typer's runner): (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from dva.cli import app

    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def run_test_frames(run: Path, tiny_store, task: str):
    """The run's unsmoothed per-frame predictions of the task's test split, read by read_split: (split, predictions)."""
    from dva.trainer.evaluate import predict_frames
    from dva.trainer.results.run_dir import load_run

    settings, model, normaliser, _ = load_run(run, "cpu")
    test = dva.read_split(tiny_store, "test", task=task)
    return test, predict_frames(model, settings, test, normaliser=normaliser)


@pytest.mark.parametrize("task", ["va", "expr", "au"])
def test_write_submission_is_dva_predicts_file_byte_for_byte(run_dir, task_runs, tiny_store, tmp_path, task):
    run = run_dir[0] if task == "va" else task_runs[task][0]
    code, stdout, stderr = cli("predict", "--run", run, "--features", tiny_store, "--out", tmp_path / "theirs.txt", "--smooth", "0", "--json")
    assert code == 0, stderr
    theirs = json.loads(stdout)
    test, frames = run_test_frames(run, tiny_store, task)
    thresholds = json.loads((run / "metrics.json").read_text())["thresholds"] if task == "au" else None  # {AU: the threshold dva fit chose}
    ours = dva.write_submission(frames, test, tmp_path / "ours.txt", thresholds=thresholds)
    assert (tmp_path / "ours.txt").read_bytes() == (tmp_path / "theirs.txt").read_bytes()
    assert ours["check"] == theirs["check"] and "same order" in ours["check"] and ours["rows"] == theirs["rows"]
    assert ours["missing"] == [] and ours["task"] == task and ours["thresholds"] == theirs.get("thresholds")
    if task == "expr":  # class indices give the same file as the probabilities they are the argmax of
        dva.write_submission(np.argmax(frames, axis=1), test, tmp_path / "indices.txt")
        assert (tmp_path / "indices.txt").read_bytes() == (tmp_path / "theirs.txt").read_bytes()


def test_write_submission_refuses_an_incomplete_test_track_in_one_line_unless_allowed(tiny_store, tmp_path):
    import zarr  # a set's mark taken away with zarr itself, as a run killed mid-write leaves it

    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    victim = open_store(copy).tracks("test")[0]
    group = zarr.open_group(str(copy / "test" / victim), mode="r+")
    group.attrs["complete"] = {k: v for k, v in group.attrs["complete"].items() if k != TINY_AUDIO}
    with pytest.warns(DvaWarning, match=f"test: 1 of 2 tracks left out .*{victim}"):
        test = dva.read_split(copy, "test")
    frames = np.full((test.n_frames, 2), 0.25, np.float32)
    with pytest.raises(DataError, match=f"1 of 2 test tracks cannot be predicted.*{victim} \\(incomplete") as refused:
        dva.write_submission(frames, test, tmp_path / "sub.txt")
    assert "\n" not in str(refused.value) and not (tmp_path / "sub.txt").exists()
    with pytest.warns(DvaWarning, match="filled with valence 0, arousal 0"):
        done = dva.write_submission(frames, test, tmp_path / "sub.txt", allow_incomplete=True)
    lines = (tmp_path / "sub.txt").read_text().splitlines()[1:]
    rows = done["missing_rows"][victim]
    assert done["missing"] == [victim] and len(lines) == done["rows"] == test.n_frames + rows
    assert [line.split(",", 1)[1] for line in lines if line.startswith(victim + "/")] == ["0.000000,0.000000"] * rows
    assert {line.split(",", 1)[1] for line in lines if not line.startswith(victim + "/")} == {"0.250000,0.250000"}
    assert f"{rows} rows of 1 tracks without predictions filled" in done["check"]


def test_write_submission_refuses_mtl_a_split_it_cannot_place_and_the_wrong_shape(tiny_store, tmp_path):
    import dataclasses

    test = dva.read_split(tiny_store, "test")
    frames = np.zeros((test.n_frames, 2), np.float32)
    for data, pred, says in ((test, frames[:, :1], "takes va's per-frame predictions"), (dataclasses.replace(test, source={}), frames, "read by dva.read_split"),
                             (dataclasses.replace(test, source={**test.source, "task": "mtl"}), frames, "dva.predict")):
        with pytest.raises(ConfigError, match=says):
            dva.write_submission(pred, data, tmp_path / "sub.txt")
    assert not (tmp_path / "sub.txt").exists()


# The "done when": a script outside the repository, `import dva` and torch only, trains a model of its own on a
# dva store through the API's Dataset and scores it with dva's metrics.
OWN_MODEL = textwrap.dedent('''
    import json
    import sys

    import numpy as np
    import torch

    import dva

    store = sys.argv[1]
    torch.manual_seed(0)
    train, val = dva.read_split(store, "train"), dva.read_split(store, "val")
    normaliser = dva.Normaliser.fit(train)  # on train only, then for every split
    train_windows = dva.WindowDataset(train, seq_len=32, stride=16, normaliser=normaliser)
    val_windows = dva.WindowDataset(val, seq_len=32, stride=16, normaliser=normaliser)


    class Model(torch.nn.Module):
        def __init__(self, width, hidden=32):
            super().__init__()
            self.gru = torch.nn.GRU(width, hidden, batch_first=True, bidirectional=True)
            self.out = torch.nn.Linear(2 * hidden, 2)

        def forward(self, batch):
            return torch.tanh(self.out(self.gru(torch.cat([batch["visual"], batch["audio"]], dim=-1))[0]))


    def ccc_loss(pred, labels, mask):
        loss = 0.0
        for d in range(2):
            p, y = pred[..., d][mask], labels[..., d][mask]
            covariance = ((p - p.mean()) * (y - y.mean())).mean()
            loss = loss + 1 - 2 * covariance / (p.var(unbiased=False) + y.var(unbiased=False) + (p.mean() - y.mean()) ** 2 + 1e-8)
        return loss


    def predict(model, windows):
        model.eval()
        with torch.no_grad():
            per_window = torch.cat([model(batch) for batch in torch.utils.data.DataLoader(windows, batch_size=64)])
        return windows.to_frames(per_window)


    model = Model(train.visual_dim + train.audio_dim)
    untrained = predict(model, val_windows)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(4):
        model.train()
        for batch in torch.utils.data.DataLoader(train_windows, batch_size=8, shuffle=True):
            if batch["label_mask"].sum() >= 2:
                loss = ccc_loss(model(batch), batch["labels"], batch["label_mask"])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    frames = predict(model, val_windows)
    np.save("val_frames.npy", frames)
    print(json.dumps({"trained": dva.score(frames, val), "untrained": dva.score(untrained, val)["p_va"]}))
''')


def test_a_script_outside_the_repository_trains_its_own_model_on_the_api_dataset_and_scores_it_with_dvas_metrics(tiny_store, tmp_path):
    used = {node.attr for node in ast.walk(ast.parse(OWN_MODEL)) if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "dva"}
    assert used and used <= set(dva.__all__), used - set(dva.__all__)  # the public API, nothing else of dva
    script = tmp_path / "own_model.py"
    script.write_text(OWN_MODEL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # this checkout's dva, as installed
    done = subprocess.run([sys.executable, str(script), str(tiny_store)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    frames = np.load(tmp_path / "val_frames.npy")
    labels = dva.read_split(tiny_store, "val").labels.numpy()
    recomputed = dva.p_va(dva.ccc(frames[:, 0], labels[:, 0]), dva.ccc(frames[:, 1], labels[:, 1]))
    assert np.isfinite(result["trained"]["p_va"]) and result["trained"]["p_va"] == pytest.approx(recomputed, abs=1e-9)
    # a constant scores a CCC of 0, the same model untrained about that: training on the windows learnt the planted VA
    assert result["trained"]["p_va"] > max(0.2, result["untrained"] + 0.2), result
