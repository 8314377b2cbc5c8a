"""Claims: several `dva extract` processes (a job array, two terminals) share one store's work.

A claim is a small JSON file `<store>/.claims/<split>/<key>.claim` holding host, pid and time,
created with O_CREAT|O_EXCL so exactly one process gets it. The holder touches it every
`HEARTBEAT` seconds; a claim whose process is gone (same host) or that has not been touched for
`timeout` seconds is taken over. Claims need a shared POSIX file system (local disk, NFS); on an
object store (fsspec URL) or in an HDF5 file they are not possible and `claims_for` returns
`NoClaims` (one process per store there; use `--shard` for job arrays).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from dva.stores import is_remote

CLAIMS_DIR = ".claims"
DEFAULT_TIMEOUT = 600.0  # seconds without a heartbeat before another process takes a claim over
HEARTBEAT = 30.0
POLL = 0.5  # seconds between looks at a claim another process holds


def claims_for(store, split: str, timeout: float = DEFAULT_TIMEOUT) -> "Claims | NoClaims":
    if store.format != "zarr" or is_remote(store.path):
        return NoClaims()
    return Claims(Path(store.path) / CLAIMS_DIR / split, timeout)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or no pid to judge by: assume it lives
    return True


class Claims:
    """The claims of one split, as seen by this process."""

    def __init__(self, folder: Path, timeout: float = DEFAULT_TIMEOUT):
        self.folder, self.timeout = Path(folder), float(timeout)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.held: dict[str, str] = {}  # key -> token of our claim
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _path(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".claim")

    def try_claim(self, key: str) -> bool:
        """Claim key; False when a live process holds it."""
        path = self._path(key)
        record = {"host": self.host, "pid": self.pid, "time": time.time(), "token": uuid.uuid4().hex}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale(path):
                    return False
                continue
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(record, handle)
            except OSError:  # a full disk: no torn claim left behind to hold the video until it is found stale
                path.unlink(missing_ok=True)
                raise
            with self._lock:
                self.held[key] = record["token"]
            self._start_heartbeat()
            return True
        return False

    def owner(self, key: str) -> dict | None:
        """The record of whoever holds key now (None when nobody does)."""
        try:
            return json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def available(self, key: str) -> bool:
        """Whether key could be claimed now: nobody holds it, or its holder is gone or silent too long."""
        look = self._look(self._path(key))
        return look is None or self._stale(*look)

    def release(self, key: str) -> None:
        with self._lock:
            token = self.held.pop(key, None)
        if token is None:
            return
        path = self._path(key)
        record = self.owner(key)
        if record is not None and record.get("token") == token:  # never remove a claim that was taken over
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)
        self._stop.set()

    @contextlib.contextmanager
    def hold(self, key: str, wait: float = 300.0):
        """Hold key for a block (metadata edits by one process at a time), waiting for it."""
        deadline = time.monotonic() + wait
        while not self.try_claim(key):
            if time.monotonic() > deadline:
                from dva.errors import StoreError

                owner = self.owner(key) or {}
                raise StoreError(f"{self.folder}: {key} has been held by pid {owner.get('pid')} on {owner.get('host')} for over {wait:.0f} s")
            time.sleep(POLL / 5)
        try:
            yield
        finally:
            self.release(key)

    @staticmethod
    def _look(path: Path) -> tuple[dict, float] | None:
        """(record, mtime) of the claim at path, None when there is none; a torn record reads as {}."""
        try:
            mtime = path.stat().st_mtime
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text), mtime
        except json.JSONDecodeError:
            return {}, mtime

    def _stale(self, record: dict, mtime: float) -> bool:
        age = time.time() - mtime
        if age > self.timeout:
            return True
        if not record:  # being written right now, or torn by a crash: its age alone decides
            return age >= 5.0
        return record.get("host") == self.host and record.get("pid") != self.pid and not _alive(record.get("pid"))

    def _take_over_if_stale(self, path: Path) -> bool:
        """True when the claim at path is gone or was stale and has been removed (the caller retries)."""
        look = self._look(path)
        if look is None:
            return True
        record, mtime = look
        if not self._stale(record, mtime):
            return False
        grave = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, grave)  # atomic: of several processes taking over, one moves it
        except FileNotFoundError:
            return True
        try:
            moved = json.loads(grave.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            moved = {}
        if record and moved.get("token") != record.get("token"):
            # a fresh claim was made between our look and the move: give it back
            with contextlib.suppress(FileExistsError):
                os.link(grave, path)
            grave.unlink()
            return False
        grave.unlink()
        return True

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return

        def beat():
            while not self._stop.wait(min(HEARTBEAT, self.timeout / 3)):
                with self._lock:
                    keys = list(self.held)
                for key in keys:
                    with contextlib.suppress(FileNotFoundError):
                        os.utime(self._path(key))

        self._heartbeat = threading.Thread(target=beat, daemon=True)
        self._heartbeat.start()


class NoClaims:
    """Where claims are impossible: every claim is granted (one process per store)."""

    held: dict = {}

    def try_claim(self, key: str) -> bool:
        return True

    def owner(self, key: str) -> None:
        return None

    def available(self, key: str) -> bool:
        return True

    def release(self, key: str) -> None:
        pass

    def release_all(self) -> None:
        pass

    @contextlib.contextmanager
    def hold(self, key: str, wait: float = 300.0):
        yield
