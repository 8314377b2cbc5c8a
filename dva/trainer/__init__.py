"""Training on the store's features, in three places a reader finds apart:

- `model/`: the model's parts, one module each (temporal encoders behind a registry, cross-modal
  attention, fusion, the CLIP-text prompt head, soft labels, losses); `model.compose` builds the model
  from `ModelSettings`.
- `loading/`: the store's features as tensors (`store`), windows over them (`windows`), audio rows at
  frame times (`audio_rows`), per-track spans (`tracks`).
- here: the run. `settings` (every `dva fit` flag, no torch), `fit` (the loop, folds, final fits),
  `evaluate` (stitched windows, P_VA, smoothing), `folds`, `ablate`, `tasks` and `workers` (Dask).
- `results/`: what a run writes and what reads it back: the run directory, plots, predictions,
  submissions, and `predict --video`.

Nothing is imported here so that `import dva.trainer.loading.windows` stays light.
"""
