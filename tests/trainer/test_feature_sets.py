"""Training on any combination of a store's feature sets (issue 11), without running an encoder."""

import json

import pytest
import torch

from dva.errors import ConfigError
from dva.stores import open_store
from dva.trainer.evaluate import text_tower_for
from dva.trainer.fit import load_features
from dva.trainer.settings import FitSettings
from tests.conftest import run_cli, TINY_AUDIO, TINY_VISUAL, WAV2VEC2

QUICK = ["--epochs", "1", "--hidden", "16", "--seq-len", "32", "--stride", "32", "--batch-size", "16", "--prompt", "none"]


def dva(*args):
    return run_cli(*args)  # in this process: BLOCKED's subprocesses (tests/trainer/test_fit.py) show these commands need no decoder


def test_a_store_with_two_audio_sets_asks_for_a_choice_in_one_line(two_audio_store, tmp_path):
    done = dva("fit", "--features", two_audio_store, "--out", tmp_path / "run", *QUICK)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "--audio-features" in done.stderr and TINY_AUDIO in done.stderr and WAV2VEC2 in done.stderr
    unknown = dva("fit", "--features", two_audio_store, "--out", tmp_path / "run", "--audio-features", "nope", *QUICK)
    assert unknown.returncode == 2 and "nope" in unknown.stderr and WAV2VEC2 in unknown.stderr


def test_two_sets_of_one_modality_are_concatenated(two_audio_store):
    one = load_features(str(two_audio_store), audio_features=TINY_AUDIO)
    both = load_features(str(two_audio_store), audio_features=f"{TINY_AUDIO},{WAV2VEC2}")
    dims = {name: info["dim"] for name, info in open_store(two_audio_store).feature_sets().items()}
    assert both.train.audio_dim == dims[TINY_AUDIO] + dims[WAV2VEC2] == one.train.audio_dim + dims[WAV2VEC2]
    assert both.train.tracks == one.train.tracks and both.provenance["sets"] == {"visual": [TINY_VISUAL], "audio": [TINY_AUDIO, WAV2VEC2]}
    frames = torch.arange(one.train.n_frames)
    torch.testing.assert_close(both.train.audio_at(frames)[:, : dims[TINY_AUDIO]], one.train.audio_at(frames))  # each set keeps its own columns
    torch.testing.assert_close(both.train.visual, one.train.visual)


def test_ablate_compares_audio_sets_one_row_each_with_no_decoder(two_audio_store, tmp_path):
    done = dva("ablate", "--features", two_audio_store, "--out", tmp_path / "ab", "--grid", f"audio_features={TINY_AUDIO},{WAV2VEC2}",
               *[f"--set={k}={v}" for k, v in (("epochs", 1), ("hidden", 16), ("prompt", "none"), ("seq_len", 32), ("stride", 32))])
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| audio_features=")]
    assert len(rows) == 2 and any(TINY_AUDIO in row for row in rows) and any(WAV2VEC2 in row for row in rows)


def test_a_run_names_its_sets_and_predict_refuses_a_store_without_them(two_audio_store, tiny_store, tmp_path):
    run = tmp_path / "run"
    done = dva("fit", "--features", two_audio_store, "--out", run, "--audio-features", WAV2VEC2, *QUICK)
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text())
    assert list(config["store"]["feature_sets"]) == [TINY_VISUAL, WAV2VEC2]
    refused = dva("predict", "--run", run, "--features", tiny_store, "--split", "val", "--out", tmp_path / "p.txt")
    assert refused.returncode == 2 and WAV2VEC2 in refused.stderr and "Traceback" not in refused.stderr
    # an ensemble of runs on different sets of one store: each run reads its own sets
    other = tmp_path / "ast-run"
    assert dva("fit", "--features", two_audio_store, "--out", other, "--audio-features", TINY_AUDIO, *QUICK).returncode == 0
    done = dva("predict", "--run", run, "--run", other, "--features", two_audio_store, "--split", "val", "--out", tmp_path / "both.txt", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == 2


def test_the_prompt_head_needs_a_clip_text_tower_or_says_how_to_name_one():
    with pytest.raises(ConfigError, match="--text-tower"):
        text_tower_for(FitSettings(prompt="learnable"), {"text_towers": []})
    assert text_tower_for(FitSettings(prompt="none"), {}) is None
    assert text_tower_for(FitSettings(prompt="learnable", text_tower="ViT-B-32/openai"), {})["pretrained"] == "openai"
    store_tower = {"model": "dva-tiny-clip", "pretrained": None, "from_set": TINY_VISUAL}
    assert text_tower_for(FitSettings(prompt="learnable"), {"text_towers": [store_tower]}) == store_tower
