"""Temporal encoders of other packages: the entry-point group `dva.temporal` (name -> a class built as cls(in_dim,
settings), as `model.temporal`'s own kinds are).

Light on purpose (importlib.metadata, no torch): settings check a name against `plugin_names()`, which reads the
installed packages' metadata and imports nothing; a plugin's code is imported only by `load_temporal`, when a model of
that name is built. A run records `plugin_record(name)` (the distribution and its version) and `check_recorded`
refuses a run whose plugin is gone and warns, once per run, when another version is installed.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points

from dva.errors import ConfigError, DvaWarning, RunError, first_line

GROUP = "dva.temporal"
_WARNED: set[tuple[str, str]] = set()  # (run, installed version): a run read twice (predict's check, then its model) warns once


def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points by name (read from the installed metadata each time: a package installed while
    this process runs is seen)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def plugin_names(builtin: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names other packages register, in name order; a name of `builtin` stays the built-in kind's."""
    return tuple(sorted(name for name in _entry_points() if name not in builtin))


def plugin_record(name: str) -> dict | None:
    """{"name", "value" (module:Class), "distribution", "version"} of the plugin registered as name; None when no
    installed package registers it."""
    ep = _entry_points().get(name)
    if ep is None:
        return None
    dist = ep.dist
    return {"name": name, "value": ep.value, "distribution": dist.name if dist else None, "version": dist.version if dist else None}


def load_temporal(name: str):
    """The class the plugin registered as name, imported now; ConfigError in one line when no package registers it
    or its module cannot be imported."""
    ep = _entry_points().get(name)
    if ep is None:
        raise ConfigError(f"--temporal {name}: no installed package registers a temporal model of that name (entry-point group {GROUP})")
    try:
        return ep.load()
    except Exception as exc:  # the plugin's own import failed: say whose, in one line
        record = plugin_record(name)
        raise ConfigError(f"--temporal {name}: {record['distribution']} {record['version']} ({ep.value}) cannot be loaded: "
                          f"{type(exc).__name__}: {first_line(exc)}") from None


def importable(names, builtin: tuple[str, ...]) -> None:
    """Import now the plugin of each name that is not one of dva's own (builtin; ConfigError, see `load_temporal`), so
    a plugin that cannot be imported is said before the store is loaded, not after."""
    for name in dict.fromkeys(names):
        if name not in builtin:
            load_temporal(name)


def check_recorded(record: dict | None, run: str) -> None:
    """A run's recorded plugin against what is installed: RunError when no installed package registers its name (the
    model cannot be built), a DvaWarning (once per run) when another version of it is installed."""
    if not record:
        return
    wanted = f"{record['distribution']}=={record['version']}" if record.get("version") else str(record.get("distribution"))
    now = plugin_record(record["name"])
    if now is None:
        raise RunError(f"{run}: its temporal model {record['name']!r} comes from {record['distribution']} {record['version']}, "
                       f"which is not installed here: pip install '{wanted}'")
    if (now["distribution"], now["version"]) != (record.get("distribution"), record.get("version")) and (run, now["version"]) not in _WARNED:
        _WARNED.add((run, now["version"]))
        warnings.warn(DvaWarning(f"{run} was trained with {record['distribution']} {record['version']} (temporal {record['name']!r}); "
                                 f"{now['distribution']} {now['version']} is installed here: it may not load or predict alike ({wanted} does)"), stacklevel=3)
