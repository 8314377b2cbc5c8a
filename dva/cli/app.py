"""The `dva` app and what every command shares: a DvaError becomes one line on stderr and exit code 2, a
DvaWarning one `dva: warning:` line."""


from __future__ import annotations

import functools
import sys
import warnings

import typer

from dva.errors import DvaError, DvaWarning, refusal

app = typer.Typer(
    help="Distance-aware soft prompt learning for multimodal valence-arousal estimation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(command):
    """Turn a DvaError into one line on stderr and exit code 2 (bugs stay tracebacks), and every
    DvaWarning into one `dva: warning:` line. The file system's refusals (a full disk, a read-only one, permission
    denied) are user errors too, wherever they were raised: the writers name their store or folder
    (`dva.errors.refusals`); one that reaches here unnamed by them names the file the error names."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always", DvaWarning)
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except DvaError as exc:
                typer.echo(f"dva: error: {exc}", err=True)
                raise typer.Exit(2) from None
            except OSError as exc:
                if (error := refusal(exc)) is None:
                    raise
                typer.echo(f"dva: error: {error}", err=True)
                raise typer.Exit(2) from None

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, DvaWarning):
        warn(str(message))
    else:  # a library's warning: as Python would print it
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def warn(message: str) -> None:
    typer.echo(f"dva: warning: {message}", err=True)
