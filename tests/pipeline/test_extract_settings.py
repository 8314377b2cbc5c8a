"""`dva extract`'s settings: one preset plus the flags given, with the defaults in one place."""

import dataclasses

import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.errors import ConfigError
from dva.pipeline.encoders import PRESETS
from dva.pipeline.extract_settings import ExtractReport, ExtractSettings, extract_settings_from


def _cli_settings(monkeypatch, *flags) -> ExtractSettings:
    """The settings `dva extract` builds from these flags (the run itself replaced: only the parsing is tested)."""
    seen = []
    monkeypatch.setattr("dva.pipeline.extract.run_extract", lambda settings: seen.append(settings) or ExtractReport(store=settings.out, split=settings.split))
    done = CliRunner().invoke(app, ["extract", "--data", "d", "--split", "train", *flags])
    assert done.exit_code == 0, done.output
    return seen[0]


def test_extract_without_flags_takes_the_settings_defaults(monkeypatch):
    assert _cli_settings(monkeypatch) == ExtractSettings(data="d", split="train")
    assert ExtractSettings(data="d", split="train").clip_model == PRESETS["default"]["clip_model"]  # the family's id, not a copy


def test_a_preset_gives_its_encoders_and_flags_win_over_it(monkeypatch):
    settings = _cli_settings(monkeypatch, "--preset", "tiny", "--ast-model", "my/ast", "--batch-size", "8", "--audio-pad", "--json")
    assert {k: getattr(settings, k) for k in PRESETS["tiny"]} == {**PRESETS["tiny"], "ast_model": "my/ast"}
    assert settings.batch_size == 8 and settings.audio_pad and not settings.progress
    assert dataclasses.replace(settings, ast_model=PRESETS["tiny"]["ast_model"], batch_size=None, audio_pad=False, progress=True) == extract_settings_from("tiny", data="d", split="train")


def test_the_batch_default_is_sized_for_the_device_the_run_resolves_and_a_given_one_wins():
    plain = ExtractSettings(data="d", split="train")
    assert (plain.resolved("cpu").device, plain.resolved("cpu").batch_size) == ("cpu", 64)
    assert (plain.resolved("cuda").device, plain.resolved("cuda").batch_size) == ("cuda", 256)
    assert dataclasses.replace(plain, device="cuda:1").resolved("cpu").batch_size == 256  # --device decides, not the machine's default
    assert dataclasses.replace(plain, batch_size=8).resolved("cuda").batch_size == 8


def test_an_unknown_preset_is_one_line():
    with pytest.raises(ConfigError, match="unknown --preset 'huge'"):
        extract_settings_from("huge", data="d", split="train")
