"""wav2vec2-family audio encoder (transformers `AutoModel`): wav2vec2, HuBERT, WavLM and their fine-tunes.

16 kHz mono -> normalised as the model's feature extractor says (zero mean, unit variance over
the whole track) -> CNN frames (20 ms apart for every released model) -> transformer hidden
states -> one layer, or the mean of all of them -> pooled to audio steps timed as AST's window
mode times them: a `window`-second window centred every `hop` seconds from 0, the mean of the
frames whose centres fall in it. Long tracks run in chunks (30 s, with 5 s of context on each
side whose frames are dropped), so the memory one pass needs does not grow with the track.
"""

from __future__ import annotations

import math

import numpy as np

from dva.errors import EncoderError
from dva.pipeline.media import SAMPLE_RATE  # what the decoder gives every audio family
from dva.pipeline.encoders.base import AudioEncoder, basename, loading, local_or_hub, quiet_logging, register_encoder, seeded_init, set_name, weights_sha256

DEFAULT_WAV2VEC2 = "facebook/wav2vec2-base"
TINY_WAV2VEC2 = "dva-tiny-wav2vec2"
CHUNK_S, CONTEXT_S = 30.0, 5.0
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm's


def tiny_config():
    """A 2-layer, 64-wide wav2vec2 with the real CNN front end's kernels and strides (20 ms frames)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )


def load_wav2vec2(model: str, device: str = "cpu"):
    """(frozen model in eval mode, feature-extractor settings dict or None) for a hub id, a local directory,
    or 'dva-tiny-wav2vec2' (random init, seed 0). Weights a checkpoint lacks are seeded too."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    if model == TINY_WAV2VEC2:
        config, source = tiny_config(), None
    else:
        source = local_or_hub(model, "--wav2vec2-model", DEFAULT_WAV2VEC2)
        with loading("wav2vec2-family model", model, "--wav2vec2-model"):
            config = AutoConfig.from_pretrained(source)
    if not (hasattr(config, "conv_kernel") and hasattr(config, "conv_stride")):
        raise EncoderError(f"--wav2vec2-model {model!r} is a {config.model_type} model, not one of the wav2vec2 family (wav2vec2, HuBERT, WavLM)")
    with seeded_init():
        if source is None:
            net = AutoModel.from_config(config)
        else:
            with loading("wav2vec2-family model", model, "--wav2vec2-model"):
                net = AutoModel.from_pretrained(source)
    extractor = None
    if source is not None:
        try:
            with quiet_logging():
                extractor = AutoFeatureExtractor.from_pretrained(source).to_dict()
        except (OSError, ValueError):  # no preprocessor_config.json: the wav2vec2 extractor's defaults
            extractor = None
    return net.to(device).eval().requires_grad_(False), extractor


def parse_layer(layer: str | int) -> str | int:
    """"mean", or a hidden-state index (an int, or an int as text) >= 0."""
    if isinstance(layer, str) and layer.strip().lower() == "mean":
        return "mean"
    try:
        index = int(layer)
    except (TypeError, ValueError):
        index = -1
    if index < 0 or isinstance(layer, float) or isinstance(layer, bool):
        raise EncoderError(f"--audio-layer must be 'mean' or a hidden-state index 0, 1, 2, ..., not {layer!r}")
    return index


@register_encoder("audio", "wav2vec2")
class Wav2Vec2Encoder(AudioEncoder):
    """encode_waveform(16 kHz mono [N]) -> (features float32 [K, dim], step centres in seconds [K]).

    layer: an index into transformers' hidden_states (0: the transformer's input, i.e. the CNN
    features after projection and positional convolution; i: after layer i) or "mean" of them all."""

    options = ("window", "hop", "layer")

    def __init__(self, model: str = DEFAULT_WAV2VEC2, device: str = "cpu", window: float = 1.0, hop: float = 0.1, layer: str | int = "mean",
                 *, chunk: float = CHUNK_S, context: float = CONTEXT_S):
        import torch

        self.layer = parse_layer(layer)
        if not (window > 0 and hop > 0):
            raise EncoderError("--audio-window and --audio-hop must be positive")
        if not (chunk > 0 and context >= 0):
            raise ValueError(f"chunk must be positive and context not negative, not {chunk}, {context}")
        self.model_name, self.window, self.hop = model, float(window), float(hop)
        self.device = torch.device(device)
        self.model, extractor = load_wav2vec2(model, device)
        config = self.model.config
        self.model_type, self.dim, self.layers = config.model_type, int(config.hidden_size), int(config.num_hidden_layers)
        if self.layer != "mean" and self.layer > self.layers:
            raise EncoderError(f"--audio-layer {self.layer}: {model} has hidden states 0..{self.layers} (or use mean)")
        self.normalise = bool((extractor or {}).get("do_normalize", True))
        self.normalise_from = "preprocessor_config" if extractor else "default"
        rate = int((extractor or {}).get("sampling_rate", SAMPLE_RATE))
        if rate != SAMPLE_RATE:
            raise EncoderError(f"{model} expects {rate} Hz audio; dva decodes 16 kHz")
        # the CNN front end: frame j sees samples [stride*j, stride*j + receptive)
        self.stride = math.prod(int(s) for s in config.conv_stride)
        self.receptive = 1 + sum((int(k) - 1) * math.prod(int(s) for s in config.conv_stride[:i]) for i, k in enumerate(config.conv_kernel))
        self.chunk_frames = max(1, round(chunk * SAMPLE_RATE / self.stride))
        self.context_frames = round(context * SAMPLE_RATE / self.stride)
        self.sha256 = weights_sha256(self.model)
        self.cast()

    def provenance(self) -> dict:
        return {
            "family": self.family, "model": self.model_name, "model_type": self.model_type, "layer": self.layer,
            "window": self.window, "hop": self.hop, "pooling": "mean of the encoder frames whose centres fall in each window",
            "chunking": {"chunk_s": self.chunk_frames * self.stride / SAMPLE_RATE, "context_s": self.context_frames * self.stride / SAMPLE_RATE},
            "normalisation": "zero mean, unit variance over the track" if self.normalise else None, "normalisation_from": self.normalise_from,
            "sample_rate": SAMPLE_RATE, "frame_shift_ms": 1000 * self.stride / SAMPLE_RATE, "receptive_field_ms": 1000 * self.receptive / SAMPLE_RATE,
            "dim": self.dim, "weights_sha256": self.sha256,
        }

    def set_name(self) -> str:
        """<model basename>-layer<N|mean>, e.g. wav2vec2-base-layermean, wavlm-base-plus-layer6."""
        return set_name(basename(self.model_name), f"layer{self.layer}")

    def frame_count(self, samples: int) -> int:
        """CNN frames of a wave of `samples` samples (as the model's _get_feat_extract_output_lengths)."""
        return 0 if samples < self.receptive else (samples - self.receptive) // self.stride + 1

    def encode_waveform(self, waveform, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """batch_size: about that many seconds of audio per pass, as AST's window mode runs batch_size 1 s windows:
        max(1, batch_size // chunk seconds) chunks."""
        wave = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        duration = wave.size / SAMPLE_RATE
        if self.normalise:
            wave = ((wave - wave.mean(dtype=np.float64)) / np.sqrt(wave.var(dtype=np.float64) + NORM_EPS)).astype(np.float32)
        if wave.size < self.receptive:  # shorter than one frame: zero-padded to one
            wave = np.pad(wave, (0, self.receptive - wave.size))
        frames = self.frames(wave, max(1, int(batch_size * SAMPLE_RATE / self.stride) // self.chunk_frames))
        steps = max(1, math.ceil(duration / self.hop - 1e-9))
        centres = np.arange(steps, dtype=np.float64) * self.hop
        return self.pool(frames, centres), centres.astype(np.float32)

    def frames(self, wave: np.ndarray, chunks_per_pass: int) -> np.ndarray:
        """Normalised wave [N] -> the chosen hidden state (or their mean) of every CNN frame, float32 [F, dim],
        computed chunk by chunk; chunks of equal length share a pass."""
        total = self.frame_count(wave.size)
        by_length: dict[int, list] = {}  # samples -> [(first core frame, end core frame, first input frame, first sample)]
        for start in range(0, total, self.chunk_frames):
            end = min(total, start + self.chunk_frames)
            first, last = max(0, start - self.context_frames), min(total, end + self.context_frames)
            # the last chunk takes the wave's tail too (less than a frame): group norm then sees what one pass sees
            samples = wave.size - first * self.stride if last == total else (last - first - 1) * self.stride + self.receptive
            by_length.setdefault(samples, []).append((start, end, first))
        out = np.zeros((total, self.dim), np.float32)
        for samples, group in by_length.items():
            for b in range(0, len(group), chunks_per_pass):
                batch = group[b : b + chunks_per_pass]
                hidden = self._run(np.stack([wave[first * self.stride : first * self.stride + samples] for _, _, first in batch]))
                for row, (start, end, first) in enumerate(batch):
                    out[start:end] = hidden[row, start - first : end - first]
        return out

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        """[B, samples] -> float32 [B, frames, dim]: hidden_states[layer], or their mean."""
        import torch

        with torch.inference_mode():
            output = self.model(input_values=self.inputs(torch.from_numpy(inputs)), output_hidden_states=True)
            states = output.hidden_states
            if self.layer == "mean":
                hidden = states[0].float()
                for state in states[1:]:
                    hidden = hidden + state.float()
                hidden = hidden / len(states)
            else:
                hidden = states[self.layer].float()
        return hidden.cpu().numpy()

    def pool(self, frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Frames [F, dim] -> float32 [K, dim]: the mean of the frames whose centres lie in [c - window/2, c + window/2)
        for each step centre c; a window with none takes the frame nearest its centre."""
        total = frames.shape[0]
        offset = self.receptive / 2 / SAMPLE_RATE  # frame j's centre is j * stride / rate + offset
        shift = self.stride / SAMPLE_RATE
        lo = np.clip(np.ceil((centres - self.window / 2 - offset) / shift - 1e-9), 0, total).astype(int)
        hi = np.clip(np.ceil((centres + self.window / 2 - offset) / shift - 1e-9), 0, total).astype(int)
        nearest = np.clip(np.round((centres - offset) / shift), 0, total - 1).astype(int)
        pooled = np.empty((centres.size, self.dim), np.float32)
        for k, (a, b) in enumerate(zip(lo, hi)):  # windows overlap: a slice each (a 10-minute track has 6,000)
            pooled[k] = frames[a:b].mean(axis=0) if b > a else frames[nearest[k]]
        return pooled
