"""Finding a release's folders: releases differ in the case of their folder names (`Annotations`,
`annotations`), so every part of dva that looks for one asks here."""

from __future__ import annotations

from pathlib import Path


def child_folder(folder: Path, name: str) -> Path | None:
    """The child of folder called name, case-insensitively."""
    exact = folder / name
    if exact.is_dir():
        return exact
    if not folder.is_dir():
        return None
    for child in folder.iterdir():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None
