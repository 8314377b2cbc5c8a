import numpy as np
import pytest

from dva.data.annotations import read_annotation, read_test_list
from dva.errors import DataError


def write(tmp_path, text, name="track.txt", mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_header_and_minus_five_rows_become_nan(tmp_path):
    labels = read_annotation(write(tmp_path, "valence,arousal\n0.5,-0.25\n-5,-5\n-1,1\n0.1,-5\n"))
    assert labels.shape == (4, 2) and labels.dtype == np.float32
    np.testing.assert_allclose(labels[0], [0.5, -0.25])
    assert np.isnan(labels[1]).all() and np.isnan(labels[3]).all()  # -5 in either column invalidates the frame
    np.testing.assert_allclose(labels[2], [-1, 1])


def test_crlf_bom_spaces_and_trailing_blank_lines(tmp_path):
    raw = "\ufeffvalence,arousal\r\n 0.2 , 0.3\r\n0.4,0.5\r\n\r\n".encode("utf-8")
    labels = read_annotation(write(tmp_path, raw))
    np.testing.assert_allclose(labels, [[0.2, 0.3], [0.4, 0.5]], rtol=1e-6)


def test_header_only_gives_zero_frames(tmp_path):
    assert read_annotation(write(tmp_path, "valence,arousal\n")).shape == (0, 2)


@pytest.mark.parametrize(
    "body, line",
    [("0.1,0.2\n0.3;0.4\n", 3), ("0.1,0.2\nnan,0.1\n", 3), ("0.1\n", 2), ("0.1,0.2,0.3\n", 2), ("0.1,abc\n", 2)],
)
def test_unparseable_line_names_file_and_line(tmp_path, body, line):
    path = write(tmp_path, "valence,arousal\n" + body)
    with pytest.raises(DataError, match=rf"track.txt:{line}:"):
        read_annotation(path)


def test_value_outside_range_that_is_not_minus_five(tmp_path):
    with pytest.raises(DataError, match=r"track.txt:3: value 1.5 is outside"):
        read_annotation(write(tmp_path, "valence,arousal\n0,0\n1.5,0\n"))
    with pytest.raises(DataError, match="outside"):
        read_annotation(write(tmp_path, "valence,arousal\n-4,0\n"))


def test_test_list_accepts_names_and_abaw_sample_lines(tmp_path):
    plain = write(tmp_path, "video1\nvideo2_left\n\nvideo2_right\n", name="test_set.txt")
    assert read_test_list(plain) == ["video1", "video2_left", "video2_right"]
    sample = write(tmp_path, "image_location,valence,arousal\nvideo1/00001.jpg,,\nvideo1/00002.jpg,,\nv3.mp4\n", name="sample.txt")
    assert read_test_list(sample) == ["video1", "v3"]
