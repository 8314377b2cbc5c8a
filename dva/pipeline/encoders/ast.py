"""AST audio encoder (transformers `ASTModel`): 16 kHz mono -> Kaldi fbank (128 mel, 10 ms) -> features.

Two modes over the same fbank:
- window: one AST pass per step, a `window`-second slice centred every `hop` seconds, run at its
  own length (native: the patch grid shrinks and the time positional embeddings are the middle
  columns of the pretrained grid, as the AST authors do for short inputs), or zero-padded to the
  model's max_length (padded: the input shape AST was trained on, about 10x the cost for 1 s);
- tokens: one AST pass per max_length segment; patch tokens are averaged over frequency, giving
  one feature per time column (about 10 Hz at the usual time stride): many times cheaper.
"""

from __future__ import annotations

import math

import numpy as np

from dva.errors import EncoderError
from dva.pipeline.media import SAMPLE_RATE  # what the decoder gives every audio family
from dva.pipeline.encoders.base import AudioEncoder, basename, loading, local_or_hub, register_encoder, seeded_init, set_name, weights_sha256

MEL_BINS = 128
FRAME_SHIFT_S = 0.010
FRAME_LENGTH_SAMPLES = 400  # 25 ms
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # ASTFeatureExtractor's defaults
DEFAULT_AST = "MIT/ast-finetuned-audioset-10-10-0.4593"
TINY_AST = "dva-tiny-ast"
MODES = ("window", "tokens")
FRONTENDS = ("kaldi", "mel")
# the seed paper's released front end (byeongjin1/abaw10th_imlab-va-: dataset.py:181-190 and 438-450, model_clip.py:241-254):
# torchaudio mel of a 10 s window (n_fft 1024, hop 512, 128 bins, power, dB with top_db 80), zero-padded to 1024
# frames, z-scored over the padded window and halved. It normalises each 10 s window of each sample, which no
# per-frame store can hold: here each consecutive 10 s segment of the track is one such window (see the README).
MEL = {"n_fft": 1024, "hop_length": 512, "n_mels": MEL_BINS, "top_db": 80.0, "segment_s": 10.0}


def grid_length(frames: int, patch: int, stride: int) -> int:
    """The shortest input length >= frames (and >= patch) that whole patches tile: patch + k * stride."""
    return patch + max(0, math.ceil((frames - patch) / stride)) * stride


def middle_positions(position_embeddings: torch.Tensor, freq_patches: int, time_patches: int) -> torch.Tensor:
    """[1, 2 + F*T, H] pretrained positions -> [1, 2 + F*time_patches, H]: the two token positions, then the
    middle time_patches columns of the [F, T] patch grid (frequency-major, as ASTPatchEmbeddings flattens),
    starting at T//2 - time_patches//2 as in the AST authors' ast_models.py."""
    import torch

    tokens, grid = position_embeddings[:, :2], position_embeddings[:, 2:]
    total = grid.shape[1] // freq_patches
    start = total // 2 - time_patches // 2
    grid = grid.reshape(1, freq_patches, total, -1)[:, :, start : start + time_patches]
    return torch.cat([tokens, grid.reshape(1, freq_patches * time_patches, -1)], dim=1)


def fbank(waveform: torch.Tensor) -> torch.Tensor:
    """16 kHz mono waveform [N] -> log-mel fbank [frames, 128] on the wave's device, exactly as ASTFeatureExtractor
    computes it (not yet normalised). Fewer than 400 samples give zero frames."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    waveform = torch.as_tensor(waveform, dtype=torch.float32).reshape(-1)
    if waveform.numel() < FRAME_LENGTH_SAMPLES:
        return torch.zeros(0, MEL_BINS, device=waveform.device)
    return kaldi.fbank(waveform[None], sample_frequency=SAMPLE_RATE, window_type="hanning", num_mel_bins=MEL_BINS)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    return (frames - AUDIOSET_MEAN) / (AUDIOSET_STD * 2)


def mel_db(waveform: torch.Tensor) -> torch.Tensor:
    """16 kHz mono waveform [N] -> [frames, 128] torchaudio mel power in dB (top_db 80 below this wave's loudest bin),
    centred frames every 512 samples, as the released dataset.py computes it for one window."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=MEL["n_fft"], win_length=MEL["n_fft"], hop_length=MEL["hop_length"],
                                               n_mels=MEL["n_mels"], center=True, power=2.0).to(waveform.device)
    db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=MEL["top_db"])
    return db(mel(torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1)))[0].T


def released_input(frames: torch.Tensor, length: int) -> torch.Tensor:
    """[frames, 128] mel dB -> [length, 128]: zero-padded (or cut) to length, then z-scored over the whole padded
    window and halved, as model_clip.py:244-254 does (torch's std: unbiased)."""
    import torch

    frames = torch.nn.functional.pad(frames[:length], (0, 0, 0, max(0, length - frames.shape[0])))
    return (frames - frames.mean()) / (frames.std() + 1e-6) * 0.5


def load_ast(model: str, device: str = "cpu"):
    """A frozen ASTModel: a hub id, a local directory, or 'dva-tiny-ast' (random init, seed 0)."""
    from transformers import ASTConfig, ASTModel

    if model == TINY_AST:
        config = ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_mel_bins=MEL_BINS, max_length=128)
        with seeded_init():
            ast = ASTModel(config)
    else:
        source = local_or_hub(model, "--ast-model", DEFAULT_AST)
        with loading("AST", model, "--ast-model"):
            ast = ASTModel.from_pretrained(source)
    return ast.to(device).eval().requires_grad_(False)


@register_encoder("audio", "ast")
class AstEncoder(AudioEncoder):
    """encode_waveform(16 kHz mono [N]) -> (features float32 [K, dim], step centres in seconds [K])."""

    options = ("mode", "window", "hop", "pad", "frontend")

    def __init__(self, model: str = DEFAULT_AST, device: str = "cpu", mode: str = "window", window: float = 1.0, hop: float = 0.1, pad: bool = False,
                 frontend: str = "kaldi"):
        import torch

        if mode not in MODES:
            raise EncoderError(f"--audio-mode must be window or tokens, not {mode!r}")
        if frontend not in FRONTENDS:
            raise EncoderError(f"--audio-frontend must be one of {', '.join(FRONTENDS)}, not {frontend!r}")
        if frontend == "mel" and mode != "tokens":
            raise EncoderError("--audio-frontend mel goes with --audio-mode tokens (the released code keeps AST's tokens of each 10 s window)")
        self.model_name, self.mode, self.window, self.hop, self.pad, self.frontend = model, mode, float(window), float(hop), bool(pad), frontend
        self.device = torch.device(device)
        self.model = load_ast(model, device)
        config = self.model.config
        self.max_length, self.dim = int(config.max_length), int(config.hidden_size)
        self.patch, self.fstride, self.tstride = int(config.patch_size), int(config.frequency_stride), int(config.time_stride)
        self.freq_patches = (MEL_BINS - self.patch) // self.fstride + 1
        self.time_patches = (self.max_length - self.patch) // self.tstride + 1
        self.window_frames = max(1, int((self.window * SAMPLE_RATE - FRAME_LENGTH_SAMPLES) // (FRAME_SHIFT_S * SAMPLE_RATE)) + 1)
        # fbank frames one window pass sees: its own length rounded up to whole patches (98 -> 106 for 1 s), or max_length
        self.window_input = self.max_length if self.pad else min(self.max_length, grid_length(self.window_frames, self.patch, self.tstride))
        self.sha256 = weights_sha256(self.model)
        self.cast()

    def provenance(self) -> dict:
        return {
            "family": self.family, "model": self.model_name, "mode": self.mode,
            "window": self.window if self.mode == "window" else None, "hop": self.hop if self.mode == "window" else None,
            "window_input": ("padded" if self.pad else "native") if self.mode == "window" else None,
            "sample_rate": SAMPLE_RATE, "num_mel_bins": MEL_BINS, "frame_shift_ms": 10, "fbank": "torchaudio.compliance.kaldi, hanning",
            "norm_mean": AUDIOSET_MEAN, "norm_std": AUDIOSET_STD, "max_length": self.max_length, "dim": self.dim,
            "weights_sha256": self.sha256,
            # recorded when not the default (older sets stay the same): the released code's mel front end
            **({} if self.frontend == "kaldi" else {"frontend": self.frontend, "mel": {**MEL, "segment_frames": self.mel_segment_frames,
                "normalise": "z-score over each segment zero-padded to max_length, x0.5", "tokens": "patch tokens averaged over frequency"}}),
        }

    def set_name(self) -> str:
        return self.name_for(self.provenance())

    @staticmethod
    def name_for(provenance: dict) -> str:
        """ast-<mode> for the default model (ast-window, ast-tokens), ast-<model basename>-<mode> for another;
        -padded when window mode pads (also for the provenance a dva 0.1 store recorded)."""
        model = [] if provenance["model"] == DEFAULT_AST else [basename(provenance["model"])]
        mode = provenance.get("mode", "window")
        frontend = [provenance["frontend"]] if provenance.get("frontend", "kaldi") != "kaldi" else []
        return set_name("ast", *model, mode, *(["padded"] if mode == "window" and provenance.get("window_input") == "padded" else []), *frontend)

    def _run(self, inputs: torch.Tensor):
        import torch

        with torch.inference_mode():
            return self.model(input_values=self.inputs(inputs))

    def pooled_native(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [B, L, 128] (L <= max_length) -> pooled features float32 [B, dim] on the CPU, computed as
        `ASTModel` computes pooler_output, but on the patch grid of L frames with the middle time positions."""
        import torch

        embeddings = self.model.embeddings
        # transformers 5 keeps the layers on the model, 4.x in model.encoder.layer (whose layers return tuples)
        layers = self.model.layers if hasattr(self.model, "layers") else self.model.encoder.layer
        with torch.inference_mode():
            patches = embeddings.patch_embeddings(self.inputs(inputs))  # [B, F*t, dim]
            positions = middle_positions(embeddings.position_embeddings, self.freq_patches, patches.shape[1] // self.freq_patches)
            tokens = torch.cat([embeddings.cls_token, embeddings.distillation_token], dim=1).expand(len(patches), -1, -1)
            hidden = torch.cat([tokens, patches], dim=1) + positions  # dropout is off in eval mode
            for layer in layers:
                hidden = layer(hidden)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            hidden = self.model.layernorm(hidden)
            return ((hidden[:, 0] + hidden[:, 1]) / 2).float().cpu()  # the CLS and distillation tokens, as ASTModel pools

    def _fit_length(self, frames: torch.Tensor, length: int) -> torch.Tensor:
        """Zero-pad (raw fbank, before normalising, as the extractor does) or cut to length."""
        import torch

        if frames.shape[0] < length:
            frames = torch.nn.functional.pad(frames, (0, 0, 0, length - frames.shape[0]))
        return normalise(frames[:length])

    def encode_waveform(self, waveform, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        import torch

        wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(-1)
        if wave.numel() == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        if self.mode == "window":
            return self._encode_windows(wave, batch_size)
        if self.frontend == "mel":
            return self._encode_mel_segments(wave, batch_size)
        return self._encode_tokens(wave, batch_size)

    @property
    def mel_segment_frames(self) -> int:
        """Mel frames of one segment: 10 s (313 frames, the released window), fewer when the model takes fewer."""
        return min(self.max_length, int(MEL["segment_s"] * SAMPLE_RATE) // MEL["hop_length"] + 1)

    def _encode_mel_segments(self, wave: torch.Tensor, batch_size: int):
        """The released front end, one 10 s segment after another: each segment's mel (its own dB range), padded to
        max_length, z-scored and halved, through AST; patch tokens averaged over frequency, one feature per time
        column whose centre lies in the segment's audio."""
        import torch

        hop, taken = MEL["hop_length"], self.mel_segment_frames
        samples = min(int(MEL["segment_s"] * SAMPLE_RATE), taken * hop - 1)  # one segment's samples: centred frames 0 .. taken-1
        starts = list(range(0, wave.numel(), samples))
        columns = np.arange(self.time_patches)
        centre_frame = columns * self.tstride + (self.patch - 1) / 2  # a patch's middle frame from the segment's first
        features, times = [], []
        for b in range(0, len(starts), batch_size):
            chunk = starts[b : b + batch_size]
            # a short last segment is padded with silence before its mel, as the released loader pads its windows
            segments = [mel_db(torch.nn.functional.pad(wave[s : s + samples], (0, max(0, s + samples - wave.numel()))).to(self.device)) for s in chunk]
            batch = torch.stack([released_input(frames, self.max_length) for frames in segments])
            tokens = self._run(batch).last_hidden_state[:, 2:].float()  # patch tokens (the released code keeps the distillation token too)
            tokens = tokens.reshape(len(chunk), self.freq_patches, self.time_patches, self.dim).mean(dim=1)
            for row, start in enumerate(chunk):
                real = min(taken, (wave.numel() - start) // hop + 1)  # frames of this segment inside the track
                keep = centre_frame < real
                features.append(tokens[row, torch.from_numpy(keep)].cpu())
                times.append(start / SAMPLE_RATE + centre_frame[keep] * hop / SAMPLE_RATE)
        return torch.cat(features).numpy(), np.concatenate(times).astype(np.float32)

    def _encode_windows(self, wave: torch.Tensor, batch_size: int):
        import torch

        duration = wave.numel() / SAMPLE_RATE
        steps = max(1, math.ceil(duration / self.hop - 1e-9))
        half = int(round(self.window / 2 * SAMPLE_RATE))
        # on the encoder's device (kaldi.fbank computes where its wave is); frame j of the padded wave starts at j*10 ms - window/2
        frames = fbank(torch.nn.functional.pad(wave.to(self.device), (half, half)))
        centres = np.arange(steps, dtype=np.float64) * self.hop
        starts = np.round(centres / FRAME_SHIFT_S).astype(np.int64)
        taken = min(self.window_frames, self.window_input)  # fbank frames of the track in one window
        # the track's fbank normalised once, rows past its end the normalised zero (the extractor pads raw
        # zeros): every window is then a row of one strided view, gathered a batch at a time on the device
        blank = float(normalise(torch.zeros(())))
        frames = torch.nn.functional.pad(normalise(frames), (0, 0, 0, max(0, int(starts[-1]) + taken - frames.shape[0])), value=blank)
        starts = torch.from_numpy(starts).to(self.device)
        windows = frames.unfold(0, taken, 1).transpose(1, 2)  # [rows, taken, 128], a view
        features = []
        for b in range(0, steps, batch_size):  # a long video has thousands of windows: a batch at a time
            chosen = starts[b : b + batch_size]
            batch = torch.full((len(chosen), self.window_input, MEL_BINS), blank, device=self.device)
            batch[:, :taken] = windows[chosen]
            features.append(self._run(batch).pooler_output.float().cpu() if self.pad else self.pooled_native(batch))
        return torch.cat(features).numpy(), centres.astype(np.float32)

    def _encode_tokens(self, wave: torch.Tensor, batch_size: int):
        import torch

        frames = fbank(wave)
        total = frames.shape[0]
        if total == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        segment_starts = list(range(0, total, self.max_length))
        features, times = [], []
        columns = np.arange(self.time_patches)
        centre_frame = columns * self.tstride + self.patch / 2  # the patch's middle, in frames from the segment start
        for b in range(0, len(segment_starts), batch_size):
            starts = segment_starts[b : b + batch_size]
            batch = torch.stack([self._fit_length(frames[s : s + self.max_length], self.max_length) for s in starts])
            tokens = self._run(batch).last_hidden_state[:, 2:].float()  # drop CLS and distillation tokens
            # patches are frequency-major (ASTPatchEmbeddings transposes to [freq, time] before the conv)
            tokens = tokens.reshape(len(starts), self.freq_patches, self.time_patches, self.dim).mean(dim=1)
            for row, start in enumerate(starts):
                keep = start + centre_frame < total  # columns whose centre lies inside the real audio
                features.append(tokens[row, torch.from_numpy(keep)].cpu())
                times.append((start + centre_frame[keep]) * FRAME_SHIFT_S + FRAME_LENGTH_SAMPLES / SAMPLE_RATE / 2)
        return torch.cat(features).numpy(), np.concatenate(times).astype(np.float32)
