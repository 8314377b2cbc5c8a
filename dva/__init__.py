"""dva: distance-aware soft prompt learning for multimodal valence-arousal estimation."""

__version__ = "0.2.0"
