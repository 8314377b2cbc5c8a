"""Claims: one holder per key; a claim of a dead process or without a heartbeat is taken over, never a live one."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


HOLD = ("import sys, time; from dva.pipeline.claims import Claims\n"
        "claims = Claims(sys.argv[1], timeout=float(sys.argv[2])); assert claims.try_claim('v'); print('held', flush=True); time.sleep(120)")


def test_the_heartbeat_keeps_a_live_holders_claim_and_a_silent_one_is_taken_over_after_the_timeout(tmp_path):
    timeout = 0.6  # the holder touches its claim every timeout / 3 seconds
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(timeout)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        mine = Claims(tmp_path, timeout=timeout)
        time.sleep(4 * timeout)  # long past the timeout since the claim was made: only the heartbeat keeps it fresh
        assert time.time() - (tmp_path / "v.claim").stat().st_mtime < timeout
        assert not mine.available("v") and not mine.try_claim("v")
        holder.send_signal(signal.SIGSTOP)  # alive but silent (a hung process): its pid still answers
        time.sleep(2 * timeout)
        assert mine.available("v") and mine.try_claim("v") and mine.owner("v")["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait()


def test_extract_takes_over_a_claim_silent_for_longer_than_claim_timeout(synth_data, tmp_path):
    from dva.data.aff_wild2 import scan

    out = tmp_path / "store"
    claims = out / ".claims" / "val"
    claims.mkdir(parents=True)
    victim = scan(synth_data, split="val").tracks[0]
    path = claims / f"{Path(victim.video).stem}.claim"  # held by a process on another host, silent for 30 s
    path.write_text(json.dumps({"host": "another-host", "pid": 1, "time": time.time() - 30, "token": "x"}))
    old = time.time() - 30
    os.utime(path, (old, old))
    command = [sys.executable, "-m", "dva.cli", "extract", "--data", str(synth_data), "--split", "val", "--out", str(out),
               "--preset", "tiny", "--device", "cpu", "--json"]
    # subprocesses with a deadline: were the flag not passed on, the run would wait out the default 600 s
    done = subprocess.run([*command, "--claim-timeout", "20"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert victim.track in json.loads(done.stdout)["extracted"] and not path.exists()
    bad = subprocess.run([*command, "--claim-timeout", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--claim-timeout must be positive" in bad.stderr
