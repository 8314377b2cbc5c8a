"""The file system's refusals while `dva extract` writes: a full disk and a read-only one on a real small file system
(a tmpfs this test mounts), permission denied for a process without root's override; each one line, no traceback,
what was written kept, and the rerun with the cause fixed equal to a clean run."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dva.cli import app
from dva.errors import FileSystemError, refusal
from dva.stores import open_store
from tests.conftest import assert_stores_equal
from tests.pipeline.test_import import ast_files

TINY = ["--preset", "tiny", "--device", "cpu", "--batch-size", "32", "--json"]  # --json: no progress bars on stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs at tmp_path/disk (the tiny train split needs about 1 MB), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this test mounts a tmpfs to fill a real file system, and mounting is not permitted here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _remount(disk: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True, capture_output=True)


def _extract(data: Path, out: Path):
    done = CliRunner().invoke(app, ["extract", "--data", str(data), "--split", "train", "--out", str(out), *TINY])
    return done.exit_code, done.stderr.strip().splitlines(), done


def test_a_full_disk_then_a_read_only_one_are_one_line_each_and_the_rerun_with_space_equals_a_clean_run(synth_data, tiny_store, small_disk):
    out = small_disk / "store"
    code, lines, done = _extract(synth_data, out)
    assert code == 2 and lines == [f"dva: error: {out}: no space left on the device; free space there or choose another place, "
                                   "then run the same command again: what was already written is kept"], done.output
    with open_store(out) as store:
        kept = {t: store.track_attrs("train", t)["done_at"] for t in store.tracks("train") if store.is_complete("train", t)}
    assert 0 < len(kept) < len(open_store(tiny_store).tracks("train")), kept  # some tracks landed whole before the disk filled
    assert not list(out.glob(".claims/*/*.claim")), "a claim outlived the run"

    _remount(small_disk, "ro,size=8m")  # room now, but read-only
    code, lines, done = _extract(synth_data, out)
    assert code == 2 and lines == [f"dva: error: {out}: the file system is read-only; mount it writable or choose another place, "
                                   "then run the same command again: what was already written is kept"], done.output

    _remount(small_disk, "rw")
    code, lines, done = _extract(synth_data, out)
    assert code == 0, done.output
    assert_stores_equal(out, tiny_store, "train")
    with open_store(out) as store:
        assert {t: store.track_attrs("train", t)["done_at"] for t in kept} == kept  # the tracks written before were kept, not redone


def test_a_full_disk_under_a_dask_worker_is_the_same_one_line_and_no_video_is_marked_failed(synth_data, small_disk):
    """A worker's OSError came back as that video's failure ("worker error: OSError: ... No space left"), recorded
    in the store as if the video were bad: the store's refusal is every video's, so the run stops in one line."""
    out = small_disk / "store"
    done = CliRunner().invoke(app, ["extract", "--data", str(synth_data), "--split", "train", "--out", str(out), "--workers", "1", *TINY])
    lines = done.stderr.strip().splitlines()
    assert done.exit_code == 2 and lines[-1].startswith(f"dva: error: {out}: no space left on the device; "), done.output
    assert not [line for line in lines if line.startswith("dva: failed:")], lines
    with open_store(out) as store:
        assert not [t for t, attrs in store.track_index("train").items() if attrs.get("error")]


def test_permission_denied_names_the_store_in_one_line_and_the_rerun_with_access_imports(tiny_store, tmp_path):
    """`dva import` into a store this user may not write. root writes anywhere: the process runs without the
    capabilities that let it (setpriv), as a user's would. A subprocess, but a light one: import loads no torch."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run dva without root's permission override")
    out = Path(shutil.copytree(tiny_store, tmp_path / "store", ignore=shutil.ignore_patterns(".claims")))
    ast_files(out, "train", tmp_path / "files")
    import_ = [sys.executable, "-m", "dva.cli", "import", str(tmp_path / "files"), "--store", str(out), "--split", "train", "--name", "mine",
               "--modality", "audio", "--rate", "10", "--json"]
    here = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run(["chmod", "-R", "a-w", str(out)], check=True)
    try:
        drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
        done = subprocess.run([*drop, *import_], capture_output=True, text=True, env=here)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(out)], check=True)
    if done.returncode != 2 and "setpriv" in done.stderr:
        pytest.skip(f"setpriv may not drop capabilities here: {done.stderr.strip()}")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines == [f"dva: error: {out}: permission denied; give this user write access there or choose another place, "
                                              "then run the same command again: what was already written is kept"], done.stderr
    again = subprocess.run(import_, capture_output=True, text=True, env=here)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("exc, where, said", [
    (OSError(errno.ENOSPC, "No space left on device"), "/data/store", "/data/store: no space left on the device; free space"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "/data/store", "/data/store: the disk quota is used up"),
    (PermissionError(errno.EACCES, "Permission denied", "/elsewhere/x.jpg"), "/data/store", "/elsewhere/x.jpg: permission denied"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/store/train/t/zarr.json"), "/data/store", "/data/store: permission denied"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "s3://bucket/store", "s3://bucket/store: the object store did not answer (ConnectionResetError"),
    (TimeoutError("read timed out"), "gs://bucket/store", "gs://bucket/store: the object store did not answer (TimeoutError: read timed out); check the connection"),
])
def test_a_refusal_names_the_path_and_what_to_do(exc, where, said):
    """The mapping alone, on errors built here: no object-store server runs in the tests to go away."""
    error = refusal(exc, where)
    assert isinstance(error, FileSystemError) and str(error).startswith(said) and str(error).endswith("what was already written is kept")


@pytest.mark.parametrize("exc, where", [
    (ValueError("bug"), "/data/store"),
    (OSError(errno.EIO, "Input/output error"), "/data/store"),  # not one the user can fix by freeing or granting: a traceback
    (FileNotFoundError(errno.ENOENT, "No such file", "x"), "s3://bucket/store"),  # a missing key is the reader's to judge
    (OSError(errno.EIO, "Input/output error", "/data/videos/a.mp4"), "s3://bucket/store"),  # a local file's error, not the store's
])
def test_anything_else_stays_what_it_was(exc, where):
    assert refusal(exc, where) is None


def test_a_full_disk_while_fit_saves_its_checkpoint_is_one_line_naming_the_run_and_leaves_no_half_checkpoint(tiny_store, small_disk):
    out = small_disk / "run"
    done = CliRunner().invoke(app, ["fit", "--features", str(tiny_store), "--out", str(out), "--epochs", "1", "--json"])
    assert done.exit_code == 2 and done.stderr.strip().splitlines() == [
        f"dva: error: {out}: no space left on the device; free space there or choose another place, then run the same command again: what was "
        "already written is kept"], done.output
    assert (out / "config.json").is_file() and not (out / "best.pt").exists()  # the checkpoint is what did not fit (about 1 MB)
