"""The `dva` command line: one thin function per command (parse, call, print).

Heavy libraries are imported inside the commands that need them, so `dva --help` is
quick and `dva fit` runs where video decoders cannot be imported.
"""

from __future__ import annotations

from dva.cli import data, features, training  # noqa: F401  (each module registers its commands on the app)
from dva.cli.app import app, user_errors, warn

__all__ = ["app", "main", "user_errors", "warn"]


def main() -> None:
    app()
