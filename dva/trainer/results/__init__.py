"""What a run writes and what reads it back: `run_dir` (config, checkpoint, metrics, loading runs),
`plots`, `submission` (the ABAW files), `predict` (a run or an ensemble on a store's split) and
`predict_video` (one recording in, VA traces out)."""
