"""The model's parts, one module each (CoOp/nanoGPT style): `temporal` (a registry of temporal encoders:
gru, tcn, transformer), `attention` (cross-modal attention), `fusion` (concat / xattn / gated /
hierarchical), `prompts` (the CLIP-text prompt head), `soft_labels` (VA regions and Gaussian soft labels),
`losses`; `compose` only builds them into the model from `ModelSettings`. Nothing is imported here."""
