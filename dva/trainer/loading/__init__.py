"""The store's features as training tensors: `store` (load splits, choose feature sets), `windows`
(SplitData, normalisation, window indices), `audio_rows` (audio steps read at frame times), `tracks`."""
