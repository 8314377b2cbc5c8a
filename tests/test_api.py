"""`import dva` as a library: light to import, every exported name documented with an example, settings given as
keywords checked as the command line checks its flags, and a recording that cannot be read named in one error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import dva


def test_importing_dva_imports_no_torch_zarr_or_pandas():
    code = "import sys, dva; print(json.dumps(sorted(m for m in ('torch', 'zarr', 'h5py', 'pandas', 'typer', 'open_clip') if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("name", [n for n in dva.__all__ if n != "__version__"])
def test_each_exported_name_resolves_and_its_docstring_shows_an_example(name):
    value = getattr(dva, name)
    assert value.__doc__ and ">>> " in value.__doc__, f"dva.{name} has no example in its docstring"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        dva.fitt


def test_fit_and_extract_refuse_an_unknown_setting_by_name_before_reading_anything(tmp_path):
    with pytest.raises(dva.DvaError, match="unknown setting.*seqlen"):
        dva.fit(features=str(tmp_path / "nothing"), seqlen=64)
    with pytest.raises(dva.DvaError, match="unknown setting.*clip_modle"):
        dva.extract(tmp_path / "nothing", clip_modle="ViT-B-16")


def test_ablate_checks_a_grid_given_in_python_as_the_command_line_checks_its_flags(tiny_store, tmp_path):
    with pytest.raises(dva.DvaError, match="fusion"):
        dva.ablate(str(tiny_store), grid={"fusion": ["concat", "sideways"]}, out=tmp_path / "a")
    with pytest.raises(dva.DvaError, match="lr='fast' is not a valid float"):
        dva.ablate(str(tiny_store), grid={"lr": [1e-3, "fast"]}, out=tmp_path / "b")
    with pytest.raises(dva.DvaError, match="--baseline fusion=gated: not a value of the grid"):
        dva.ablate(str(tiny_store), grid={"fusion": ["concat", "hierarchical"]}, baseline={"fusion": "gated"}, out=tmp_path / "c")
    assert not (tmp_path / "a" / "results.csv").exists()


def test_predict_video_names_a_recording_that_cannot_be_read(run_dir, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(dva.DvaError, match=r"broken\.mp4: "):
        dva.predict_video(broken, run=run_dir[0], progress=False)


def test_a_recording_of_two_subjects_is_one_frame_with_a_track_column_and_one_subject_the_csv_as_it_is(tmp_path):
    from dva.api import tracks_frame

    header = "frame,time,valence,arousal,face\n"
    (tmp_path / "a_left.csv").write_text(header + "1,0.0,0.1,0.2,1\n2,0.04,0.1,0.3,1\n")
    (tmp_path / "a_right.csv").write_text(header + "1,0.0,-0.5,0.0,0\n")
    both = tracks_frame({"a_left": tmp_path / "a_left.csv", "a_right": tmp_path / "a_right.csv"})
    assert list(both.columns) == ["track", "frame", "time", "valence", "arousal", "face"] and list(both["track"]) == ["a_left", "a_left", "a_right"]
    assert both.attrs["tracks"] == ["a_left", "a_right"] and list(both["valence"]) == [0.1, 0.1, -0.5]
    one = tracks_frame({"a_left": tmp_path / "a_left.csv"})
    assert list(one.columns) == ["frame", "time", "valence", "arousal", "face"] and len(one) == 2
