"""Recipes as data (dva/recipes/*.toml): listed, shown, applied to extract, fit and ablate (a grid key), each run on
the store's feature sets its recipe expects; and every loss term checked for what it can train."""

import csv
import dataclasses
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from dva import recipes
from dva.cli import app
from dva.pipeline.extract_settings import ExtractSettings, extract_settings_from
from dva.trainer.settings import FitSettings, settings_from
from tests.conftest import TINY_AUDIO, TINY_VISUAL

runner = CliRunner()
QUICK = ["epochs=1", "patience=1", "hidden=16", "seq_len=32", "stride=16", "batch_size=16"]
SEED_VISUAL, SEED_AUDIO = "clip-dva-tiny-clip-random-imagenet", "ast-dva-tiny-ast-tokens-mel"  # seed-code's sets, tiny encoders standing in
# what a recipe does not decide: where a run reads and writes, and what the store or the run's own choices fix
RUN_ONLY = {"features", "out", "device", "seed", "descriptions", "visual_features", "audio_features", "text_tower", "train_splits", "folds",
            "recipe", "recipe_sha256", "tcn_kernel", "temporal_layers", "prompt_templates"}  # prompt_templates: None (one template) has no TOML form


def test_the_shipped_recipes_are_paper_seed_code_and_an_abaw_winner_each_with_its_source():
    assert {"paper", "seed-code", "team-ras-2024"} <= set(recipes.names())
    for name in recipes.names():
        recipe = recipes.load(name)
        assert recipe.summary and recipe.source and recipe.sha256 == recipes.checksum(recipe.path)
        settings_from(None, with_recipe=name, features="no-such-store")  # every [fit] key a setting, valid together
        extract_settings_from(recipe=name, data="d", split="train")  # every [extract] key too
    assert "byeongjin1/abaw10th_imlab-va-" in recipes.load("seed-code").source


def test_the_paper_recipe_is_what_fit_and_extract_do_without_flags():
    paper, defaults = recipes.load("paper"), FitSettings()
    assert {k: getattr(defaults, k) for k in paper.fit} == paper.fit
    assert {f.name for f in dataclasses.fields(FitSettings)} - RUN_ONLY <= set(paper.fit)  # a new setting joins the recipe
    extract = ExtractSettings(data="d", split="train")
    assert {k: getattr(extract, k) for k in paper.extract} == paper.extract
    assert extract_settings_from(recipe="paper", data="d", split="train") == extract_settings_from(data="d", split="train")


def test_a_flag_overrides_the_recipe_and_the_tiny_preset_stands_in_for_its_encoders_keeping_its_preprocessing():
    settings = settings_from(None, with_recipe="seed-code", features="no-such-store", sigma=0.3)
    assert (settings.sigma, settings.temporal, settings.lambda_prompt, settings.recipe) == (0.3, "tcn", 0.2, "seed-code")
    tiny = extract_settings_from("tiny", recipe="seed-code", data="d", split="train")
    assert (tiny.clip_model, tiny.clip_norm, tiny.audio_frontend, tiny.audio_mode) == ("dva-tiny-clip", "imagenet", "mel", "tokens")
    real = extract_settings_from(recipe="seed-code", data="d", split="train", clip_norm="clip")
    assert (real.clip_model, real.clip_pretrained, real.clip_norm) == ("ViT-B-16", "openai", "clip")


def test_a_recipe_with_an_unknown_key_is_one_line_and_exit_2(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('summary = "x"\nsource = "y"\n[fit]\nsigma = 0.4\nprompt_inputs = "visual"\n')
    result = runner.invoke(app, ["fit", "--recipe", str(mine), "--features", str(tmp_path / "none")])
    assert result.exit_code == 2 and result.stderr.strip() == f"dva: error: {mine}: unknown [fit] setting(s) prompt_inputs"
    result = runner.invoke(app, ["fit", "--recipe", "nope", "--features", str(tmp_path)])
    assert result.exit_code == 2 and "unknown recipe 'nope': the shipped ones are paper, seed-code" in result.stderr


def test_dva_recipes_lists_one_line_each_and_shows_one_whole():
    listed = runner.invoke(app, ["recipes"])
    assert listed.exit_code == 0
    lines = listed.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == recipes.names() and all("source: " in line for line in lines)
    shown = runner.invoke(app, ["recipes", "show", "seed-code"])
    assert shown.exit_code == 0 and 'clip_norm = "imagenet"' in shown.stdout and "train.py:52" in shown.stdout


@pytest.fixture(scope="module")
def both_recipes_store(tiny_store, synth_data, tmp_path_factory):
    """The tiny store (the paper's sets, tiny encoders) with seed-code's sets added by `dva extract --recipe seed-code
    --preset tiny` for train and val."""
    out = tmp_path_factory.mktemp("stores") / "both"
    shutil.copytree(tiny_store, out)
    for split in ("train", "val"):
        result = runner.invoke(app, ["extract", "--recipe", "seed-code", "--preset", "tiny", "--data", str(synth_data), "--split", split,
                                     "--out", str(out), "--device", "cpu", "--batch-size", "32"])
        assert result.exit_code == 0, result.output
    return out


def test_each_recipe_finds_its_own_sets_and_a_store_without_them_says_how_to_add_them(both_recipes_store, tiny_store):
    seed = settings_from(None, with_recipe="seed-code", features=str(both_recipes_store))
    paper = settings_from(None, with_recipe="paper", features=str(both_recipes_store))
    assert (seed.visual_features, seed.audio_features) == (SEED_VISUAL, SEED_AUDIO)
    assert (paper.visual_features, paper.audio_features) == (TINY_VISUAL, TINY_AUDIO)
    from dva.errors import ConfigError

    with pytest.raises(ConfigError, match="has no visual feature set made as recipe seed-code expects .*dva extract --recipe seed-code"):
        settings_from(None, with_recipe="seed-code", features=str(tiny_store))


def test_ablate_over_recipes_trains_each_on_its_own_sets_with_the_set_values_and_records_the_checksum(both_recipes_store, tmp_path):
    flags = [arg for item in QUICK for arg in ("--set", item)]
    result = runner.invoke(app, ["ablate", "--features", str(both_recipes_store), "--grid", "recipe=paper,seed-code", *flags, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with (tmp_path / "results.csv").open(newline="") as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"recipe=paper", "recipe=seed-code"}
    paper, seed = (json.loads(rows[f"recipe={name}"]["settings"]) for name in ("paper", "seed-code"))
    assert (seed["visual_features"], seed["audio_features"], seed["temporal"], seed["sigma"]) == (SEED_VISUAL, SEED_AUDIO, "tcn", 0.45)
    assert (paper["visual_features"], paper["temporal"]) == (TINY_VISUAL, "gru")
    assert seed["seq_len"] == paper["seq_len"] == 32 and seed["hidden"] == 16  # --set overrides each recipe
    assert seed["recipe_sha256"] == recipes.checksum(recipes.path_of("seed-code"))
    assert rows["recipe=seed-code"]["diff"] and rows["recipe=seed-code"]["ci_low"]  # its paired interval against paper
    assert rows["recipe=seed-code"]["untrained"] == rows["recipe=paper"]["untrained"] == ""  # the prompt head reads the fused stream here


def test_extracting_with_a_recipe_records_imagenet_normalisation_and_the_mel_front_end(both_recipes_store):
    from dva.stores import open_store

    with open_store(str(both_recipes_store), mode="r") as store:
        sets = store.feature_sets()
    assert sets[SEED_VISUAL]["encoder"]["norm"] == "imagenet" and sets[SEED_VISUAL]["encoder"]["mean"] == [0.485, 0.456, 0.406]
    assert "norm" not in sets[TINY_VISUAL]["encoder"]  # the model's own: recorded as before
    mel = sets[SEED_AUDIO]["encoder"]
    assert mel["frontend"] == "mel" and mel["mel"]["hop_length"] == 512 and mel["mel"]["n_fft"] == 1024
    from dva.pipeline.rebuild import rebuild_settings

    rebuilt = rebuild_settings(SEED_AUDIO, sets[SEED_AUDIO], data="d", split="all")
    assert (rebuilt.audio_frontend, rebuilt.audio_mode) == ("mel", "tokens")
    assert rebuild_settings(SEED_VISUAL, sets[SEED_VISUAL], data="d", split="all").clip_norm == "imagenet"


def test_the_mel_input_is_the_released_formula():
    """model_clip.py:244-254 of the released code, written out here: pad to 1024 frames with zeros, z-score over the
    whole padded window (torch's unbiased std), halve."""
    from dva.pipeline.encoders.ast import mel_db, released_input

    wave = torch.sin(torch.arange(16000 * 3) * 0.05) * torch.linspace(0, 1, 16000 * 3)
    frames = mel_db(wave)
    assert frames.shape == (16000 * 3 // 512 + 1, 128)
    assert float(frames.max() - frames.min()) <= 80.0 + 1e-4  # top_db 80
    x = torch.nn.functional.pad(frames.T[None], (0, 1024 - frames.shape[0])).transpose(1, 2)
    expected = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-6) * 0.5
    assert torch.allclose(released_input(frames, 1024), expected[0], atol=1e-5)


def _first_batch_model(tiny_store, **overrides):
    from dva.trainer.evaluate import build_model, normaliser_on
    from dva.trainer.fit import _train_windows, load_features
    from dva.trainer.loading.windows import Normaliser

    features = load_features(str(tiny_store))
    settings = FitSettings(features=str(tiny_store), hidden=16, seq_len=32, stride=16, batch_size=8, **overrides)
    train = features.train
    model = build_model(settings, features.provenance, train.visual_dim, train.audio_dim, "cpu")
    index, inside, target = _train_windows(train, torch.ones(train.labels.shape[0], dtype=torch.bool), settings, "cpu")
    return model, (settings, train, index, inside, target, normaliser_on(Normaliser.fit(train), "cpu"), None)


def test_every_loss_term_of_the_default_model_trains_something_and_a_prompt_term_on_frozen_inputs_is_named(tiny_store):
    from dva.trainer.fit import term_reach, untrained_message

    model, args = _first_batch_model(tiny_store, prompt="fixed")
    reach = term_reach(model, *args)
    assert set(reach) == {"va", "prompt"} and all(count > 0 for count in reach.values())
    # the released code's case, built by hand: everything the prompt head reads is frozen, the regression head trains
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("regression."))
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    reach = term_reach(model, *args)
    assert reach == {"va": 2, "prompt": 0}  # the regression head's weight and bias; nothing for the prompt term
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items()) and model.training  # the check changes nothing
    assert untrained_message(["prompt"]) == "the prompt term of the loss reaches no trainable parameter: it trains nothing (it only adds to the loss's value)"


def test_a_row_whose_loss_term_trains_nothing_is_marked_in_results_md():
    from dva.trainer.ablate import markdown_table, summarise

    row = {"figure": "best_val", "epoch": 1, "ccc_v": 0.1, "ccc_a": 0.1, "p_va": 0.1}
    table = markdown_table(summarise([{**row, "variant": "recipe=seed-code", "untrained": "prompt"}, {**row, "variant": "recipe=paper", "untrained": ""}]))
    assert "| recipe=seed-code (its prompt loss term trains nothing) |" in table and "| recipe=paper |" in table


def test_a_fit_records_what_each_loss_term_reaches(run_dir):
    out, _ = run_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["loss_terms"]) == {"va", "prompt"} and metrics["untrained_terms"] == []
    assert all(term["trains"] and term["parameters_reached"] > 0 for term in metrics["loss_terms"].values())


def test_a_recipe_inside_a_config_file_is_refused_in_one_line_it_is_chosen_with_the_flag(tmp_path):
    from dva.errors import ConfigError

    config = tmp_path / "fit.toml"
    config.write_text('recipe = "seed-code"\nsigma = 0.4\n')
    with pytest.raises(ConfigError, match="a recipe is chosen with --recipe NAME"):
        settings_from(config)
    config.write_text("sigma = 0.4\n")
    assert settings_from(config, with_recipe="seed-code", features="none").sigma == 0.4  # the config overrides the recipe


def test_a_fit_whose_prompt_term_reaches_nothing_warns_in_one_line_and_records_it(tiny_store, tmp_path, monkeypatch):
    """The released code's case through the real fit path. dva has no setting yet that feeds the prompt head frozen
    inputs (h-seedcode's prompt_input), so the model is built by the real builder, then everything but the regression
    head is frozen: the one stand-in here, and it says what it stands for."""
    from dva.errors import DvaWarning
    from dva.trainer import fit as fit_module
    from dva.trainer.results.run_dir import write_run

    real = fit_module.build_model

    def frozen_but_regression(*args, **kwargs):
        model = real(*args, **kwargs)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("regression."))
        return model

    monkeypatch.setattr(fit_module, "build_model", frozen_but_regression)
    settings = FitSettings(features=str(tiny_store), prompt="fixed", hidden=16, seq_len=32, stride=16, batch_size=16, epochs=1, patience=1)
    features = fit_module.features_for(settings)
    with pytest.warns(DvaWarning) as caught:
        result = fit_module.train(settings, features, progress=False)
    assert [str(w.message) for w in caught if "loss reach" in str(w.message)] == [fit_module.untrained_message(["prompt"])]
    assert result.loss_terms == {"va": 2, "prompt": 0}
    metrics = json.loads((write_run(result, features, tmp_path / "run") / "metrics.json").read_text())
    assert metrics["untrained_terms"] == ["prompt"] and metrics["loss_terms"]["prompt"] == {"parameters_reached": 0, "trains": False}


def test_an_ablation_row_names_the_terms_that_train_nothing_in_any_fold():
    from dva.trainer.ablate import Job, job_row

    job = Job("recipe=seed-code", 0, FitSettings(folds=0), "k")
    done = {None: {"best": {"epoch": 1, "ccc_v": 0.1, "ccc_a": 0.2, "p_va": 0.15}, "seconds": 1.0, "loss_terms": {"va": 12, "prompt": 0}}}
    assert job_row(job, done)["untrained"] == "prompt"
    done[None]["loss_terms"] = {"va": 12, "prompt": 3}
    assert job_row(job, done)["untrained"] == ""


def test_seed_code_region_phrases_sit_on_dva_regions_of_the_same_centre():
    """model_clip.py:38-48 lists the nine phrases valence-major (low V: low, mid, high A; then mid V; then high V);
    dva orders regions arousal high to low, valence negative to positive (soft_labels.py). Each phrase must land
    on the region whose centre has its valence and arousal signs."""
    from dva.trainer.model.soft_labels import REGION_CENTRES

    released = ["sad, tired, and low-energy", "displeased and uncomfortable", "angry, tense, and highly aroused",
                "calm, expressionless, and low-energy", "neutral and emotionally ordinary", "alert, attentive, and emotionally neutral",
                "relaxed, content, and pleasant", "happy and pleasant", "excited, joyful, and energetic"]
    phrases = recipes.load("seed-code").fit["descriptions"]
    for k, (v, a) in enumerate(REGION_CENTRES.tolist()):
        level = lambda x: 0 if x < 0 else (1 if x == 0 else 2)  # noqa: E731  low, mid, high
        assert phrases[k] == released[3 * level(v) + level(a)]
