"""Recipes: named configurations as data, one TOML file each in this folder (open_clip's model_configs/ is the
pattern: families are data, one door). A recipe holds `dva fit` settings ([fit]), the extraction settings of the
feature sets it trains on ([extract]) and where it comes from (source); this module is the only reader.

    names()            the shipped recipes
    load(NAME | FILE)  a Recipe (a file path loads a recipe of your own)
    checksum(path)     sha256 of the file's bytes, recorded with every run made from it

Light on purpose (no torch): the CLI lists and shows recipes without the trainer.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dva.errors import ConfigError

RECIPE_DIR = Path(__file__).parent
SECTIONS = ("name", "summary", "source", "fit", "extract")


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line
    source: str  # repository and file(s), or paper
    fit: dict  # `dva fit` settings (FitSettings field names)
    extract: dict  # `dva extract` settings of the feature sets it expects (ExtractSettings field names)
    path: str
    sha256: str


def names() -> list[str]:
    """The shipped recipes, by name (the file stems)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def checksum(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def path_of(recipe: str | Path) -> Path:
    """A shipped recipe's file, or recipe itself when it is a .toml file; ConfigError naming the shipped ones."""
    given = Path(recipe)
    if given.suffix == ".toml":
        if not given.is_file():
            raise ConfigError(f"--recipe {recipe}: no such file")
        return given
    path = RECIPE_DIR / f"{recipe}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {str(recipe)!r}: the shipped ones are {', '.join(names())} (or give a .toml file)")
    return path


def load(recipe: str | Path) -> Recipe:
    """The recipe of that name (or file). Its [fit] and [extract] keys are checked where they are applied
    (`settings_from`, `extract_settings_from`): an unknown one is a one-line ConfigError naming the file."""
    path = path_of(recipe)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc})") from None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; a recipe has {', '.join(SECTIONS)}")
    for key in ("summary", "source"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{path}: a recipe needs a one-line {key} = \"...\"")
    return Recipe(data.get("name", path.stem), data["summary"].strip(), data["source"].strip(), dict(data.get("fit", {})),
                  dict(data.get("extract", {})), str(path), checksum(path))


def unknown_keys(recipe: Recipe, section: str, known) -> None:
    """ConfigError naming the keys of the recipe's [section] that are not in known."""
    wrong = sorted(set(getattr(recipe, section)) - set(known))
    if wrong:
        raise ConfigError(f"{recipe.path}: unknown [{section}] setting(s) {', '.join(wrong)}")
