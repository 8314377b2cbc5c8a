"""`dva extract --crops CROPS --only visual --name NAME`: faces made elsewhere (e.g. `dva faces --size 224 --out
CROPS` on a release) read into a visual set beside the release's, which `dva ablate` then compares."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
from typer.testing import CliRunner

from dva.cli import app
from tests.conftest import TINY_VISUAL


def test_crops_from_another_folder_make_a_second_named_visual_set(synth_data, tiny_store, tmp_path):
    from PIL import Image

    from dva.stores import open_store

    crops = tmp_path / "crops224"
    for folder in sorted((synth_data / "cropped_aligned").iterdir()):  # dlib finds no face in synthetic pictures: resize the release's
        (crops / "cropped_aligned" / folder.name).mkdir(parents=True)
        for jpeg in folder.glob("*.jpg"):
            Image.open(jpeg).resize((224, 224), Image.BICUBIC).save(crops / "cropped_aligned" / folder.name / jpeg.name, quality=95)
    track = sorted((crops / "cropped_aligned").iterdir())[0].name
    (crops / "cropped_aligned" / track / "00005.jpg").unlink()  # only the copy lacks it: the new set must mask row 5
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    for split in ("train", "val"):
        result = CliRunner().invoke(app, ["extract", "--data", str(synth_data), "--split", split, "--crops", str(crops), "--only", "visual",
                                          "--name", "clip-224", "--preset", "tiny", "--device", "cpu", "--out", str(store), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["extracted"]
    with open_store(str(store), mode="r") as opened:
        sets = opened.feature_sets()
        assert sets["clip-224"]["preprocessing"] == {"visual_source": "crops", "crops": {"folder": str(crops.resolve() / "cropped_aligned"), "faces": None}, "device": "cpu", "compute_dtype": "float32"}
        assert "crops" not in sets[TINY_VISUAL]["preprocessing"]  # the release's set is untouched
        arrays = opened.read_track("train", track, ["clip-224", TINY_VISUAL])
    mine, release = arrays["clip-224/mask"], arrays[f"{TINY_VISUAL}/mask"]
    assert release[4] and not mine[4] and (mine == release)[np.arange(len(mine)) != 4].all()
    rows = mine & release
    assert not np.array_equal(arrays["clip-224/data"][rows], arrays[f"{TINY_VISUAL}/data"][rows])  # other pixels, other features
    flags = [f"--set={key}={value}" for key, value in dict(epochs=1, patience=1, hidden=16, prompt="none", seq_len=32, stride=32, batch_size=16).items()]
    result = CliRunner().invoke(app, ["ablate", "--features", str(store), "--grid", f"visual_features={TINY_VISUAL},clip-224", *flags,
                                      "--out", str(tmp_path / "ablate")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "ablate" / "results.csv").open(newline="") as handle:
        compared = {json.loads(row["settings"])["visual_features"] for row in csv.DictReader(handle)}
    assert compared == {TINY_VISUAL, "clip-224"}


def test_where_crops_lie_is_not_part_of_a_sets_identity_but_how_they_were_made_is():
    from dva.stores import set_differences

    def info(folder, size):
        faces = None if size is None else {"size": size}
        return {"modality": "visual", "encoder": {"family": "clip"}, "preprocessing": {"visual_source": "crops", "crops": {"folder": folder, "faces": faces}}}

    assert set_differences(info("/a/cropped_aligned", 224), info("/b/cropped_aligned", 224)) == []
    assert set_differences(info("/a/cropped_aligned", 224), info("/a/cropped_aligned", 112)) == ["preprocessing.crops: {'faces': {'size': 224}} != {'faces': {'size': 112}}"]
    assert set_differences(info("/a", None), {**info("/a", None), "preprocessing": {"visual_source": "crops"}})  # the release's crops are not --crops
