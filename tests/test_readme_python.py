"""README.md's "Python" section, run as written: its ```python blocks in order, in one namespace, in a folder holding
`stores/` (the tiny store `dva extract` wrote) and `me.mp4` (a real recording of a face, with sound)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """The ```python blocks of the README's "## Python" section, in order."""
    text = README.read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.longest
def test_the_readme_python_section_runs_as_written(tiny_store, people, tmp_path, monkeypatch):
    pytest.importorskip("dlib", reason="dva.predict_video finds faces with dva[faces]")
    blocks = python_blocks()
    assert len(blocks) >= 4
    (tmp_path / "stores").symlink_to(tiny_store)
    shutil.copy(people / "talking.mp4", tmp_path / "me.mp4")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    scored = namespace["dva"].score(namespace["frames"], namespace["val"])
    assert math.isfinite(scored["p_va"]) and scored["p_va"] > 0.1  # the user's own GRU learned something on dva's windows
    assert namespace["report"]["best_val"]["p_va"] > 0.1 and Path(namespace["report"]["run"]).name == "python"
    assert namespace["done"]["check"].startswith("checked against ") and namespace["written"]["check"].startswith("checked against ")
    assert (tmp_path / "predictions.txt").read_text().splitlines()[0] == (tmp_path / "mine.txt").read_text().splitlines()[0]
    assert len((tmp_path / "predictions.txt").read_text().splitlines()) == len((tmp_path / "mine.txt").read_text().splitlines())
    rows = namespace["rows"]
    assert sorted(row["variant"] for row in rows) == ["fusion=concat", "fusion=hierarchical"]
    assert [row["diff"] is None for row in rows].count(True) == 1  # the baseline's row; the other has its difference
    trace = namespace["trace"]
    assert list(trace.columns[:4]) == ["frame", "time", "valence", "arousal"] and len(trace) == 120 and trace["face"].all()
