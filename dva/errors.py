"""Errors a user can cause. The CLI prints their message on one line and exits with code 2."""


class DvaError(Exception):
    """Base class: the message names the file and says what to do."""


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
