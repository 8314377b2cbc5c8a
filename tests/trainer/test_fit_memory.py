"""`dva fit` at the release's scale: features held as the store holds them, and progress inside an epoch."""

import io

import torch

from dva.stores import open_store
from dva.trainer.fit import load_features, train
from dva.trainer.settings import FitSettings
from tests.conftest import TINY_AUDIO

QUICK = dict(epochs=1, hidden=16, seq_len=32, stride=16, batch_size=16, prompt="none")


def test_features_stay_as_stored_with_audio_at_its_own_rate_and_splits_as_views_of_one_pool(tiny_store):
    features = load_features(str(tiny_store))
    store = open_store(tiny_store)
    stored_rows = sum(int(a["set_rows"][TINY_AUDIO]) for split in ("train", "val") for a in store.track_index(split).values())
    assert features.pool.visual.dtype == torch.float16 and features.pool.audio[0].data.dtype == torch.float16
    assert features.pool.audio[0].data.shape[0] == stored_rows + 1  # the audio steps (and one spare row), not one row per frame
    assert stored_rows < features.pool.n_frames
    # train and val share the pool's memory: pooling them for folds or a final fit copies nothing
    assert features.train.visual.data_ptr() == features.pool.visual.data_ptr()
    assert features.val.visual.data_ptr() == features.pool.visual[features.pool.offsets[len(features.train.tracks)]:].data_ptr()
    assert features.pooled() is features.pool and features.pool.tracks == features.train.tracks + features.val.tracks


class _Terminal(io.StringIO):
    def isatty(self):  # tqdm draws only on a terminal; this test reads what it would draw there
        return True


def test_a_fit_shows_batch_progress_inside_each_epoch_on_a_terminal(tiny_store, monkeypatch):
    features = load_features(str(tiny_store))
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    train(FitSettings(features=str(tiny_store), **QUICK), features, progress=True)
    shown = terminal.getvalue()
    assert "epoch 1:" in shown and "frame/s" in shown and "loss=" in shown and "evaluate:" in shown
    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    train(FitSettings(features=str(tiny_store), **QUICK), features, progress=False)
    assert quiet.getvalue() == ""
