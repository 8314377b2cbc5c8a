"""The one definition of how a message names an exception and shortens a list."""

from dva.data.layout import claim_key, video_of
from dva.errors import at_most, first_line


def test_first_line_of_an_exception_even_without_text():
    assert first_line(ValueError("bad header\n  at byte 12")) == "bad header"
    assert first_line(OSError("")) == "OSError"  # no IndexError on an empty message
    assert first_line(ValueError("x" * 300), 80) == "x" * 80


def test_a_long_list_is_cut_with_a_count_of_the_rest():
    assert at_most(["a", "b", "c", "d", "e"], 3) == "a; b; c; and 2 more"
    assert at_most(["a", "b", "c", "d"], 2, ", ") == "a, b and 2 more"
    assert at_most(["a", "b"], 3) == "a; b"


def test_a_pair_of_subjects_shares_its_videos_claim():
    assert claim_key("x_left", "videos/batch1/x.mp4") == claim_key("x_right", "videos/batch1/x.mp4") == claim_key("x_left", None) == "x"
    assert video_of("x_right", None) == "x" and video_of("y", "videos/new_vids/y.avi") == "videos/new_vids/y.avi"
