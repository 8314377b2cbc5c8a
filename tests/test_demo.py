"""`dva demo` end to end, as `make demo` runs it: the longest test of the suite, so it is scheduled first."""

import json
import subprocess
import sys

import pytest

from dva.demo import DEMO_AUDIO_SETS

pytestmark = pytest.mark.longest


def test_demo_runs_end_to_end_and_fusion_beats_each_modality(tmp_path):
    """What `make demo` shows a newcomer: P_VA >= 0.85 on val (the README shows 0.958), fused > visual, audio."""
    done = subprocess.run([sys.executable, "-m", "dva.cli", "demo", "--out", str(tmp_path / "demo"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["p_va"] >= 0.85  # README: 0.9579 (epoch 11); one modality alone scores 0.848 or less
    scores = {row["variant"]: row["p_va"] for row in result["ablation"]}
    fused = scores["modalities=visual,audio prompt=learnable"]
    assert fused > scores["modalities=visual prompt=learnable"] and fused > scores["modalities=audio prompt=learnable"]
    compared = [row["variant"] for row in result["feature_sets"]]  # two audio sets of one store, one row each
    assert sorted(compared) == sorted(f"audio_features={name}" for name in DEMO_AUDIO_SETS)
    assert all((tmp_path / "demo" / "runs" / "full" / name).is_file() for name in ("curves.png", "traces.png", "va_plane.png"))
