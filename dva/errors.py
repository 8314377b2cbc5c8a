"""Errors a user can cause. The CLI prints their message on one line and exits with code 2."""

import errno
from contextlib import contextmanager
from pathlib import Path


class DvaError(Exception):
    """Base class: the message names the file and says what to do (the CLI prints it on one line, exit code 2).

    >>> try:
    ...     dva.fit(features="no/such/store")
    ... except dva.DvaError as error:
    ...     print(error)
    no/such/store: no feature store here; write one with `dva extract --out no/such/store`
    """


class DataError(DvaError):
    """The dataset folder or one of its files cannot be used."""


class StoreError(DvaError):
    """The feature store is missing, incompatible or damaged."""


class StoreDamage(StoreError):
    """Part of a store does not read back as written: a chunk whose checksum fails, truncated or missing, or metadata
    that cannot be read. problem says what (one line); where names the split, track and array once known."""

    def __init__(self, problem: str, where: str = ""):
        self.problem, self.where = problem, where
        super().__init__(f"{where}: {problem}" if where else problem)


class EncoderError(DvaError):
    """An encoder cannot be built from the given name, tag or path."""


class ConfigError(DvaError):
    """A setting or flag value is invalid."""


class RunError(DvaError):
    """A run directory cannot be used: not written by `dva fit`, its checkpoint does not match, or runs disagree."""


class FileSystemError(DvaError):
    """The file system or object store refused: a full disk, a read-only one, no permission, a store gone away.
    What was written before stays (every writer of dva keeps its finished work), so the same command run again
    once the cause is fixed goes on from there."""


# errno -> (what the file system said, what to do about it)
_REFUSALS = {
    errno.ENOSPC: ("no space left on the device", "free space there or choose another place"),
    errno.EDQUOT: ("the disk quota is used up", "free space there or choose another place"),
    errno.EROFS: ("the file system is read-only", "mount it writable or choose another place"),
    errno.EACCES: ("permission denied", "give this user write access there or choose another place"),
    errno.EPERM: ("operation not permitted", "give this user write access there or choose another place"),
}
_AGAIN = "then run the same command again: what was already written is kept"


def refusal(exc: BaseException, where: str | None = None) -> "FileSystemError | None":
    """exc as a one-line FileSystemError naming the path and what to do, when it is the file system's refusal (a full
    disk, a read-only one, permission denied) or, where is a URL, any OSError of its backend (a connection lost, a
    timeout, a bucket gone: fsspec's backends raise OSError subclasses); None for anything else (a bug stays a
    traceback). The path: where (the store or folder being written), unless exc names a file outside it."""
    if not isinstance(exc, OSError):
        return None
    # an object store's backend error names no local file (a local file's error is not the store's)
    gone = where is not None and "://" in str(where) and exc.filename is None and not isinstance(exc, (FileNotFoundError, FileExistsError))
    if exc.errno not in _REFUSALS and not gone:
        return None
    path = where if where is not None and (exc.filename is None or _inside(exc.filename, where)) else exc.filename
    if exc.errno in _REFUSALS:
        said, todo = _REFUSALS[exc.errno]
    else:
        said, todo = f"the object store did not answer ({type(exc).__name__}: {first_line(exc, 100)})", "check the connection and credentials"
    return FileSystemError(f"{path or 'the file system'}: {said}; {todo}, {_AGAIN}")


@contextmanager
def refusals(where: str):
    """The file system's refusals while writing where (a store, a run directory, an output file) as one-line
    FileSystemErrors naming it (see `refusal`)."""
    try:
        yield
    except OSError as exc:
        error = refusal(exc, str(where))
        if error is None:
            raise
        raise error from None


def _inside(filename, where: str) -> bool:
    try:
        return Path(str(filename)).resolve().is_relative_to(Path(where).resolve())
    except (OSError, ValueError, TypeError):
        return False


class DvaWarning(UserWarning):
    """Something a user must know but that does not stop the command (a track left out, a row filled).
    The CLI prints it as one `dva: warning:` line."""



def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's first line of text for a one-line message (at most limit characters), or its type's name
    when it has no text."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def at_most(items: list[str], limit: int, sep: str = "; ") -> str:
    """At most limit items joined by sep and a count of the rest, a list that fits one line: 'a; b; and 3 more'
    (sep "; "), 'a, b and 3 more' (sep ", ")."""
    rest = len(items) - limit
    tail = (" and" if sep == ", " else f"{sep}and") + f" {rest} more"
    return sep.join(items[:limit]) + (tail if rest > 0 else "")
