"""dva: distance-aware soft prompt learning for multimodal valence-arousal estimation.

The Python API is the names in `__all__`; `import dva` is light (no torch, zarr or encoder is imported until a name
that needs it is first used). The command line (`dva ...`) calls the same functions.

    >>> import dva
    >>> store = dva.open_store("stores")              # the feature store `dva extract` wrote
    >>> train = dva.read_split("stores", "train")     # a split as tensors, the trainer's own loading
    >>> report = dva.fit(features="stores", epochs=5) # the figures `dva fit` prints, as a dict
    >>> df = dva.predict_video("me.mp4", run=report["run"])

Each name's docstring has its own example; README.md's "Python" section shows them together.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# name -> the module that defines it: imported on first use (PEP 562), so `import dva` costs nothing.
_EXPORTS = {
    # the feature store
    "open_store": "dva.stores",
    "Store": "dva.stores",
    # a split as tensors and windows over it, for a training loop of one's own
    "read_split": "dva.trainer.loading.dataset",
    "SplitData": "dva.trainer.loading.windows",
    "Normaliser": "dva.trainer.loading.windows",
    "WindowDataset": "dva.trainer.loading.dataset",
    "score": "dva.trainer.loading.dataset",
    # runs: what the commands do, from settings
    "FitSettings": "dva.trainer.settings",
    "extract": "dva.api",
    "fit": "dva.api",
    "predict": "dva.api",
    "ablate": "dva.api",
    "predict_video": "dva.api",
    # ABAW's metrics and its submission file
    "ccc": "dva.metrics",
    "p_va": "dva.metrics",
    "expr_f1": "dva.metrics",
    "au_f1": "dva.metrics",
    "p_mtl": "dva.metrics",
    "write_submission": "dva.trainer.results.write",
    # what a user's mistake raises (the CLI prints it on one line, exit 2)
    "DvaError": "dva.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dva' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
