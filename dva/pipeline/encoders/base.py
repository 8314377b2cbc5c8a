"""What every encoder is: the registry of families, the two interfaces, and the helpers they share.

A family registers its class with `@register_encoder("visual" | "audio", name)`; `build_visual` and
`build_audio` (in the package) find it by name. Nothing here imports torch: the package stays cheap
to import (the CLI lists the families without loading a model).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import re

from dva.errors import EncoderError, first_line
from dva.stores.attrs import MODALITIES

_REGISTRY: dict[str, dict[str, type]] = {modality: {} for modality in MODALITIES}


def register_encoder(modality: str, family: str):
    """Class decorator: make cls the `family` encoder of `modality` and set its `family` attribute."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")

    def register(cls: type) -> type:
        base = VisualEncoder if modality == "visual" else AudioEncoder
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__name__} to be a {modality} encoder")
        if family in _REGISTRY[modality] and _REGISTRY[modality][family] is not cls:
            raise ValueError(f"{modality} encoder family {family!r} is already registered by {_REGISTRY[modality][family].__name__}")
        cls.family = family
        _REGISTRY[modality][family] = cls
        return cls

    return register


def families(modality: str) -> tuple[str, ...]:
    """The registered family names of one modality, in registration order."""
    return tuple(_REGISTRY[modality])


def encoder_class(modality: str, family: str) -> type:
    """The class registered as `family`; an unknown family is an EncoderError naming the known ones."""
    try:
        return _REGISTRY[modality][family]
    except KeyError:
        known = ", ".join(_REGISTRY[modality]) or "none"
        raise EncoderError(f"unknown {modality} encoder family {family!r}: use one of {known}") from None


class FrozenModel:
    """What every encoder shares: a frozen `model` on `device` computing in `dtype`: float32, or bfloat16 on CUDA with
    the weights cast once (`cast`), not re-cast by autocast on every forward. The weights' checksum is taken before."""

    model: object
    device: object
    dtype: object = None

    def cast(self, dtype=None):
        """Cast the model's weights to dtype (None: bfloat16 on CUDA, float32 elsewhere); inputs follow (`inputs`)."""
        import torch

        self.dtype = dtype or (torch.bfloat16 if torch.device(self.device).type == "cuda" else torch.float32)
        self.model.to(self.dtype)
        return self

    def inputs(self, tensor):
        """A batch on the model's device, in its dtype."""
        return tensor.to(self.device, dtype=self.dtype, non_blocking=True)


class VisualEncoder(FrozenModel, abc.ABC):
    """Images to one feature vector each: encode(preprocess(uint8 [B, 3, H, W])) -> float [B, dim].

    Subclasses are built as cls(model, pretrained, device) and set `dim` and `device` (a torch.device)."""

    family: str = ""
    dim: int
    device: object

    @abc.abstractmethod
    def preprocess(self, images):
        """uint8 [B, 3, H, W] -> the model's input [B, 3, S, S] on the device, by batched tensor ops."""

    @abc.abstractmethod
    def encode(self, pixels):
        """preprocess's output -> float32 [B, dim]."""

    @abc.abstractmethod
    def provenance(self) -> dict:
        """Everything that decides the features (JSON-able): at least family, model, dim, weights_sha256."""

    @abc.abstractmethod
    def set_name(self) -> str:
        """The store's name for these features: letters, digits, '.', '_' and '-' only (see `set_name`)."""


class AudioEncoder(FrozenModel, abc.ABC):
    """A 16 kHz mono waveform to features at audio steps: encode_waveform(float32 [N]) ->
    (float32 [K, dim], step centres in seconds float32 [K]); K is 0 for an empty wave.

    Subclasses are built as cls(model, device, **options) with the keyword options they name in
    `options` (of mode, window, hop, pad, layer); `build_audio` drops the others, and set `dim` and `device`."""

    family: str = ""
    options: tuple[str, ...] = ()
    dim: int
    device: object

    @abc.abstractmethod
    def encode_waveform(self, waveform, batch_size: int = 32):
        """float32 [N] at 16 kHz mono -> (features float32 [K, dim], step centre times in seconds float32 [K])."""

    @abc.abstractmethod
    def provenance(self) -> dict:
        """Everything that decides the features (JSON-able): at least family, model, dim, weights_sha256;
        options the family does not use are absent."""

    @abc.abstractmethod
    def set_name(self) -> str:
        """The store's name for these features: letters, digits, '.', '_' and '-' only (see `set_name`)."""


def set_name(*parts: str) -> str:
    """A feature-set name from parts joined by '-': every character outside [A-Za-z0-9._-] (such as '/'
    in a hub id) becomes '-'. A part that is a hub id or a path should be passed through `basename` first."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", "-".join(str(part) for part in parts))


def basename(model: str) -> str:
    """The last component of a hub id ('facebook/wav2vec2-base' -> 'wav2vec2-base') or local path
    ('/ckpt/wavlm/' -> 'wavlm'); a bare name as it is."""
    return re.split(r"[/\\]", str(model).rstrip("/\\"))[-1] or str(model)


def local_or_hub(model: str, flag: str, example: str) -> str:
    """model as from_pretrained should get it: an existing local directory (user-expanded), or a hub id
    ("owner/name"). Anything else is an EncoderError naming the flag."""
    from pathlib import Path

    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if "/" not in model or model.startswith((".", "/", "~")):
        raise EncoderError(f"{flag} {model!r} is neither a local directory nor a hub id like {example}")
    return model


@contextlib.contextmanager
def loading(what: str, model: str, flag: str):
    """Turn a failed from_pretrained into one EncoderError line that says how to load offline."""
    try:
        with quiet_logging():
            yield
    except (OSError, ValueError) as exc:
        raise EncoderError(
            f"cannot load {what} {model!r}: {first_line(exc, 200)} "
            f"(weights download once with network; offline, pass a local directory to {flag})"
        ) from None


def resized_like_pil(images, device, interpolation: str, size):
    """uint8 [B, 3, H, W] -> float [B, 3, h, w] on device, resized to size (an int: the shortest side) with interpolation
    (nearest, bilinear, bicubic), clamped to 0-255 and rounded: image processors and timm's transforms resize uint8
    pixels with PIL and round, so this matches them."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    mode = {"nearest": InterpolationMode.NEAREST, "bicubic": InterpolationMode.BICUBIC}.get(interpolation, InterpolationMode.BILINEAR)
    x = images.to(device, non_blocking=True).float()
    return F.resize(x, size, interpolation=mode, antialias=mode != InterpolationMode.NEAREST).clamp_(0, 255).round_()


def weights_sha256(module) -> str:
    """sha256 over every tensor of the state dict, in key order: the identity of the weights."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def seeded_init(seed: int = 0):
    """Random initialisation that is the same on every call and leaves every generator as it found it: the CPU
    generator is forked and seeded alone (models are built on the CPU, then moved). `torch.manual_seed` would
    also reseed every CUDA generator, outside the fork, so on a GPU every later `--seed` would draw from seed 0."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


@contextlib.contextmanager
def quiet_logging():
    """Silence library logging while loading weights: open_clip warns about every random-initialised
    model (the tiny preset's point) and hub clients log each failed download before raising, which
    dva reports itself in one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)
