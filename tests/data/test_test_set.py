"""The test phase as released: the VA list found by its challenge name, and the organisers' sample file."""

import pytest

from dva.data.aff_wild2 import scan
from dva.data.test_set import read_sample_file
from dva.errors import DataError
from tests.conftest import write_annotation, write_video

LISTS = {
    "Action_Unit_Detection_Challenge_test_set_release.txt": "alpha\nbeta\n",
    "Expression_Classification_Challenge_test_set_release.txt": "beta\n",
    "Valence_Arousal_Estimation_Challenge_test_set_release.txt": "gamma\nalpha_right\nalpha_left\n",
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Videos for three test names (alpha holds two people), train annotations, no test lists yet."""
    root = tmp_path_factory.mktemp("release")
    write_video(root / "videos" / "batch1" / "alpha.mp4", frames=30, fps=25)
    write_video(root / "videos" / "batch2" / "beta.mp4", frames=20, fps=25)
    write_video(root / "videos" / "batch2" / "gamma.mp4", frames=25, fps=25, audio=False)
    write_annotation(root / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "beta.txt", lines=20)
    return root


def _layout(root, tmp_path, folder: str | None, lists=LISTS):
    data = tmp_path / "data"
    data.mkdir()
    for child in root.iterdir():
        (data / child.name).symlink_to(child)
    where = data / folder if folder else data
    where.mkdir(exist_ok=True)
    for name, text in lists.items():
        (where / name).write_text(text)
    return data


@pytest.mark.parametrize("folder", ["names_of_videos_in_each_test_set", "NAMES_OF_VIDEOS_IN_EACH_TEST_SET", None])
def test_the_va_list_is_found_by_its_challenge_name_never_another_challenges(release, tmp_path, folder):
    data = _layout(release, tmp_path, folder)
    result = scan(data, split="test", tasks=("va",))  # the VA challenge alone (every task: test_test_set_tasks.py)
    assert [t.track for t in result.tracks] == ["gamma", "alpha_right", "alpha_left"]  # the list's order
    assert result.test_list.endswith("Valence_Arousal_Estimation_Challenge_test_set_release.txt")
    assert result.tracks[1].subject == "right" and result.tracks[1].video == "videos/batch1/alpha.mp4"
    assert all(t.n_frames is None for t in result.tracks)  # no sample file: T is not known before decoding


def test_only_other_challenges_lists_is_an_error_naming_them_and_test_list_overrides(release, tmp_path):
    others = {k: v for k, v in LISTS.items() if "Valence" not in k}
    data = _layout(release, tmp_path, "names_of_videos_in_each_test_set", others)
    with pytest.raises(DataError, match="no VA test list.*Action_Unit_Detection"):
        scan(data, split="test", tasks=("va",))
    mine = tmp_path / "mine.txt"
    mine.write_text("beta\n")
    assert [t.track for t in scan(data, split="test", test_list=mine, tasks=("va",)).tracks] == ["beta"]
    with pytest.raises(DataError, match="--test-list .*no such file"):
        scan(data, split="test", test_list=tmp_path / "nope.txt", tasks=("va",))


def test_the_sample_file_decides_each_test_tracks_rows_and_adds_tracks_it_names(release, tmp_path):
    data = _layout(release, tmp_path, "names_of_videos_in_each_test_set")
    rows = [f"alpha_left/{i:05d}.jpg,," for i in range(1, 28)] + [f"gamma/{i:05d}.jpg,," for i in range(1, 31)]
    rows += [f"beta/{i:05d}.jpg,," for i in range(1, 5)]
    (data / "CVPR_8th_ABAW_VA_test_set_sample.txt").write_text("image_location,valence,arousal\n" + "\n".join(rows) + "\n")
    (data / "CVPR_8th_ABAW_EXPR_test_set_sample.txt").write_text("image_location,Neutral\nbeta/00001.jpg,\n")
    result = scan(data, split="test", tasks=("va",))
    tracks = {t.track: t for t in result.tracks}
    assert tracks["alpha_left"].n_frames == 27 and tracks["gamma"].n_frames == 30  # not the decoded 30 and 25
    assert tracks["alpha_right"].n_frames is None  # listed, but the sample asks for none of its rows
    assert [t.track for t in result.tracks][-1] == "beta"  # named only by the sample: added at the end
    assert result.sample.track_order() == ["alpha_left", "gamma", "beta"]
    assert any("alpha_right" in w for w in result.warnings) and any("beta" in w for w in result.warnings)


def test_a_malformed_sample_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "VA_test_set_sample.txt"
    path.write_text("image_location,valence,arousal\nalpha/00001.jpg,,\nalpha/frame-two,,\n")
    with pytest.raises(DataError, match=r"VA_test_set_sample.txt:3: expected"):
        read_sample_file(path)
    path.write_text("image_location,valence,arousal\n")
    with pytest.raises(DataError, match="no rows"):
        read_sample_file(path)
