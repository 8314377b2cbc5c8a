"""Reading a track's pictures: crops decoded in batches, what is missing or corrupt named and masked."""

from pathlib import Path

import numpy as np
from PIL import Image

from dva.pipeline.reading import decode_on_gpu


def test_a_batch_of_only_missing_crops_decodes_to_nothing_without_an_error():
    # the batched decoder's path on the CPU device: an all-missing batch (a stretch without a face) must not call
    # decode_jpeg([]), which raises ValueError and would stop the run at the same track on every rerun
    masked = []
    assert decode_on_gpu([b"", b"", b""], [Path(f"{i:05d}.jpg") for i in range(3)], "cpu", masked) == [None, None, None]
    assert masked == []


def test_a_corrupt_crop_in_a_batch_is_named_and_the_rest_decode(tmp_path):
    good = tmp_path / "00001.jpg"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(good, quality=95)
    masked = []
    images = decode_on_gpu([good.read_bytes(), b"\xff\xd8\xff\xe0garbage" * 20, b""], [good, tmp_path / "00002.jpg", tmp_path / "00003.jpg"], "cpu", masked)
    assert images[0].shape == (3, 8, 8) and images[1] is None and images[2] is None
    assert len(masked) == 1 and "00002.jpg" in masked[0] and "corrupt JPEG" in masked[0]


def test_nvjpeg_that_cannot_decode_on_the_device_is_refused_at_the_start():
    import pytest
    import torch

    from dva.errors import ConfigError
    from dva.pipeline.reading import check_nvjpeg

    check_nvjpeg("cpu")  # the batched decoder runs on the CPU device: nothing to refuse
    if torch.cuda.is_available():
        check_nvjpeg("cuda:0")  # a GPU with nvJPEG decodes the probe
        return
    # here decode_jpeg on a CUDA device raises RuntimeError for every batch: the run must say so once, up front,
    # instead of decoding crop by crop on the CPU under a record that says nvjpeg
    with pytest.raises(ConfigError, match="nvJPEG cannot decode on cuda:0.*--jpeg-decoder cpu"):
        check_nvjpeg("cuda:0")
