"""Claims: one holder per key; a claim of a dead process or without a heartbeat is taken over, never a live one."""

import json
import os
import socket
import subprocess
import sys
import time

from dva.pipeline.claims import Claims


def test_one_holder_at_a_time_and_release_frees_the_key(tmp_path):
    mine, theirs = Claims(tmp_path), Claims(tmp_path)
    theirs.pid = os.getpid() + 1  # another process's view of the same folder (its pid lives: ours is alive too)
    assert mine.try_claim("video") and not mine.available("video")
    assert not theirs.try_claim("video")
    assert mine.owner("video")["host"] == socket.gethostname()
    mine.release("video")
    assert theirs.available("video") and theirs.try_claim("video")


def test_a_dead_process_claim_and_a_silent_claim_are_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "a.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "time": 0, "token": "old"}))
    (tmp_path / "b.claim").write_text(json.dumps({"host": "another-host", "pid": 1, "time": 0, "token": "old"}))
    claims = Claims(tmp_path, timeout=60)
    assert claims.try_claim("a")  # its process is gone
    assert not claims.try_claim("b")  # another host's process cannot be checked: only silence counts
    stale = time.time() - 120
    os.utime(tmp_path / "b.claim", (stale, stale))
    assert claims.try_claim("b") and claims.owner("b")["pid"] == os.getpid()


def test_release_never_removes_a_claim_that_was_taken_over(tmp_path):
    claims = Claims(tmp_path)
    assert claims.try_claim("v")
    (tmp_path / "v.claim").write_text(json.dumps({"host": "h", "pid": 1, "time": 0, "token": "someone else"}))
    claims.release("v")
    assert (tmp_path / "v.claim").exists()


def test_a_claim_torn_by_a_crash_is_taken_over_once_it_is_old(tmp_path):
    claims = Claims(tmp_path)
    (tmp_path / "t.claim").write_text('{"host": "h", "pi')
    assert not claims.available("t")  # as young as a claim being written
    old = time.time() - 10
    os.utime(tmp_path / "t.claim", (old, old))
    assert claims.available("t") and claims.try_claim("t")
