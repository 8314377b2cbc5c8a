"""How far dva's cacheable form of the seed code's AST front end is from the released one, on a real recording.

The released code (byeongjin1/abaw10th_imlab-va-: dataset.py:395-450, model_clip.py:241-254) computes, for every
sample, the torchaudio mel (n_fft 1024, hop 512, 128 bins, dB, top_db 80) of the 10 s window ending at the target
frame, zero-pads it to 1024 frames and z-scores it over the padded window, halved. A per-frame store cannot hold a
normalisation per window per sample; `dva extract --audio-frontend mel` caches one per consecutive 10 s segment
of the track. For windows ending every --step seconds this script puts the same dB frames through both
normalisations (the window's own: top_db below its loudest bin, its mean and std; the cached one: those of the
segment each frame lies in) and reports the difference AST's input sees, weight-free:
relative RMS ||x_window - x_cached|| / ||x_window|| over the window's frames, and their correlation.

    python benchmarks/mel_segments.py [--wav FILE | --video FILE] [--seconds 60] [--step 1] [--quick]

Default recording: espeak-ng reading a paragraph (real synthesised speech, with pauses), when espeak-ng is there;
else (and with --quick) a 14 s chirp with silences, which says the script runs, not what speech gives.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from dva.pipeline.encoders.ast import MEL, released_input
from dva.pipeline.media import SAMPLE_RATE, read_audio

TEXT = ("The committee met on a grey Tuesday morning. Nobody expected the vote to pass, and when it did, the room went quiet. "
        "Then someone laughed, a short surprised laugh, and suddenly everyone was talking at once. Outside, the rain had stopped. "
        "I remember thinking that this was the first good news in months. We walked to the station together, slowly, "
        "arguing about what it meant, and whether it would last. It did not last. But for an afternoon it felt like spring. ")


def raw_db(wave: torch.Tensor) -> torch.Tensor:
    """[frames, 128] mel power in dB, before the top_db clamp (the clamp depends on which frames are together)."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=MEL["n_fft"], win_length=MEL["n_fft"], hop_length=MEL["hop_length"],
                                               n_mels=MEL["n_mels"], center=True, power=2.0)
    return torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)(mel(wave[None]))[0].T


def clamp(db: torch.Tensor, top: float) -> torch.Tensor:
    return torch.maximum(db, torch.tensor(top - MEL["top_db"]))


def recording(args) -> tuple[str, np.ndarray]:
    if args.wav or args.video:
        path = args.wav or args.video
        return Path(path).name, read_audio(path).wave
    if not args.quick and shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            text = " ".join([TEXT] * 4)
            subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(wav), text], check=True, capture_output=True)
            samples = read_audio(wav).wave[: int(args.seconds * SAMPLE_RATE)]
            return f"espeak-ng speech, {len(samples) / SAMPLE_RATE:.0f} s", samples
    t = np.arange(int(14 * SAMPLE_RATE)) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * (200 + 80 * t) * t) * (np.sin(2 * np.pi * 0.3 * t) > -0.3)
    return "chirp with silences, 14 s", wave.astype(np.float32)


def compare(wave: np.ndarray, step: float) -> dict:
    """Mean and worst relative RMS difference, and the mean correlation, over windows ending every step seconds."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    hop, window = MEL["hop_length"], int(MEL["segment_s"] * SAMPLE_RATE)
    segments = []  # per cached segment: its top dB, mean and std as released_input computes them (padded to 1024)
    for start in range(0, wave.numel(), window):
        piece = torch.nn.functional.pad(wave[start : start + window], (0, max(0, start + window - wave.numel())))
        db = raw_db(piece)
        top = float(db.max())
        padded = torch.nn.functional.pad(clamp(db, top), (0, 0, 0, 1024 - db.shape[0]))
        segments.append((top, float(padded.mean()), float(padded.std())))
    rel, corr = [], []
    for end in np.arange(MEL["segment_s"], wave.numel() / SAMPLE_RATE + 1e-9, step):
        start = int(round((end - MEL["segment_s"]) * SAMPLE_RATE))
        db = raw_db(wave[start : start + window])
        released = released_input(clamp(db, float(db.max())), 1024)[: db.shape[0]]
        which = np.minimum((start + np.arange(db.shape[0]) * hop) // window, len(segments) - 1)
        top, mean, std = (torch.tensor([segments[k][i] for k in which])[:, None] for i in range(3))
        cached = (torch.maximum(db, top - MEL["top_db"]) - mean) / (std + 1e-6) * 0.5
        rel.append(float((released - cached).norm() / released.norm()))
        corr.append(float(np.corrcoef(released.reshape(-1), cached.reshape(-1))[0, 1]))
    if not rel:
        raise SystemExit(f"the recording is {wave.numel() / SAMPLE_RATE:.1f} s: the released windows are {MEL['segment_s']:g} s (give a longer one)")
    return {"windows": len(rel), "rel_mean": float(np.mean(rel)), "rel_max": float(np.max(rel)), "corr": float(np.mean(corr))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav")
    parser.add_argument("--video")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    name, wave = recording(args)
    found = compare(wave, args.step)
    print("| recording | windows (10 s, every {:g} s) | relative RMS difference, mean | worst | correlation, mean |".format(args.step))
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| {name} | {found['windows']} | {found['rel_mean']:.3f} | {found['rel_max']:.3f} | {found['corr']:.4f} |")


if __name__ == "__main__":
    main()
