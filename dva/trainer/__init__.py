"""Training: windows over the store (data), model parts, losses, the fit loop, evaluation, ablation.

One file per model part (CoOp/nanoGPT style): `temporal` (projection + GRU), `attention`
(cross-modal attention), `fusion` (concat / xattn / gated / hierarchical), `prompts` (the CLIP-text
prompt head), `soft_labels` (VA regions and Gaussian soft labels), `losses`; `model` only composes
them from `ModelSettings`. Nothing is imported here so that `import dva.trainer.data` stays light.
"""
