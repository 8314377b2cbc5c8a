"""timm image encoder: any timm model by name (`efficientnet_b0`, `convnext_tiny.fb_in1k`) or hub id
(`hf-hub:owner/name`), with timm's own pretrained weights (its download and cache) or a local weights file of
tensors only: safetensors, or a torch state dict read with `weights_only=True` (a pickled model is refused). The
emotion-trained EfficientNets ABAW teams use (HSEmotion's `enet_b0_8_best_vgaf`, ...) are timm EfficientNets:
`--timm-model efficientnet_b0 --timm-weights FILE` (their 8-class head is dropped: the feature is before it).

Preprocessing comes from timm's data config (`resolve_model_data_config`: input size, interpolation, mean, std,
crop_pct, crop_mode) and runs on batches of uint8 tensors on the encoder's device like timm's eval transform
(resize to input / crop_pct with antialias, centre crop, normalise). The feature is timm's pooled pre-logits
(`forward_head(forward_features(x), pre_logits=True)`).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

from dva.errors import EncoderError, first_line
from dva.pipeline.encoders.base import VisualEncoder, basename, quiet_logging, register_encoder, resized_like_pil, seeded_init, set_name, weights_sha256

DEFAULT_TIMM = "efficientnet_b0"
TINY_TIMM = "dva-tiny-timm"
# the tiny preset: timm's test EfficientNet at a quarter of its width (64-d features, 12k weights) on 64 px inputs
TINY_ARCHITECTURE = ("test_efficientnet", {"channel_multiplier": 0.25, "pretrained_cfg_overlay": {"input_size": (3, 64, 64)}})
CROP_MODES = ("center", "squash")  # timm's "border" (pad to fit) has no tensor version here yet
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
NESTED = ("state_dict", "model", "state_dict_ema")  # where training scripts (timm's among them) keep the weights in a checkpoint


def read_weights(path: str) -> dict:
    """{name: tensor} of a safetensors file or a torch state-dict file (a checkpoint dict holding one under
    state_dict / model is read too; DataParallel's 'module.' prefix is removed). Anything but tensors is an
    EncoderError: a pickled model is never unpickled."""
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise EncoderError(f"--timm-weights {path}: no such file")
    try:
        if file.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise EncoderError(
            f"--timm-weights {path} holds more than tensors (a pickled model?): dva reads weights only; "
            "save model.state_dict() with torch.save or safetensors and pass that file"
        ) from None
    except Exception as exc:  # noqa: BLE001  (safetensors' and torch's readers raise their own types for a damaged file)
        raise EncoderError(f"--timm-weights {path} is not a safetensors or torch state-dict file: {first_line(exc, 160)}") from None
    if isinstance(state, dict) and not _tensors(state):
        state = next((state[key] for key in NESTED if isinstance(state.get(key), dict) and _tensors(state[key])), state)
    if not isinstance(state, dict) or not state or not _tensors(state):
        raise EncoderError(f"--timm-weights {path} holds {type(state).__name__} that is not a state dict of named tensors")
    return {key.removeprefix("module."): tensor for key, tensor in state.items()}


def _tensors(state: dict) -> bool:
    import torch

    return bool(state) and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items())


def load_timm(model: str, weights: str | None, device: str = "cpu"):
    """(frozen timm model without its classifier, in eval mode; the classifier weights the file had and the model
    dropped). weights: a file (see `read_weights`), or None: timm's pretrained weights ('dva-tiny-timm': a random
    initialisation, seed 0)."""
    import timm

    architecture, kwargs = TINY_ARCHITECTURE if model == TINY_TIMM else (model, {})
    if not architecture.startswith("hf-hub:") and not timm.is_model(architecture):
        raise EncoderError(f"unknown timm model {model!r}: see timm.list_models() (e.g. efficientnet_b0, resnet50), an hf-hub:owner/name id, or use --preset tiny")
    state = read_weights(weights) if weights else None
    pretrained = weights is None and model != TINY_TIMM
    try:
        with seeded_init(), quiet_logging():
            net = timm.create_model(architecture, pretrained=pretrained, num_classes=0, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        raise EncoderError(
            f"cannot load timm {model}: {first_line(exc, 200)} "
            "(weights download once with network into timm's cache; offline, pass a local weights file to --timm-weights)"
        ) from None
    dropped = _load_state(net, state, model, weights) if state is not None else []
    return net.to(device).eval().requires_grad_(False), dropped


def _load_state(net, state: dict, model: str, weights: str) -> list[str]:
    """Load state into net strictly but for its classifier (net has none: num_classes=0); returns the keys dropped."""
    heads = net.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    dropped = sorted(key for key in state if any(key == head or key.startswith(f"{head}.") for head in heads) and key not in net.state_dict())
    try:
        result = net.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: torch's first line only names the class, the next says which
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise EncoderError(f"--timm-weights {weights} does not fit timm {model}: {lines[min(1, len(lines) - 1)][:200]}") from None
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]  # a counter, unused in eval
    if missing or result.unexpected_keys:
        said = [f"missing {', '.join(missing[:3])}" if missing else "", f"unexpected {', '.join(result.unexpected_keys[:3])}" if result.unexpected_keys else ""]
        raise EncoderError(f"--timm-weights {weights} does not fit timm {model} ({'; '.join(s for s in said if s)}): pass the --timm-model it was trained as")
    return dropped


def data_settings(net) -> dict:
    """timm's data config of net as the preprocessing dva runs: input [h, w], interpolation, mean, std, crop_pct, crop_mode."""
    import timm.data

    config = timm.data.resolve_model_data_config(net)
    settings = {
        "input_size": [int(s) for s in config["input_size"][1:]], "interpolation": str(config.get("interpolation", "bilinear")),
        "mean": [float(m) for m in config["mean"]], "std": [float(s) for s in config["std"]],
        "crop_pct": float(config.get("crop_pct") or 0.875), "crop_mode": str(config.get("crop_mode") or "center"),
    }
    height, width = settings["input_size"]
    if settings["crop_mode"] not in CROP_MODES or (settings["crop_mode"] == "center" and height != width):
        raise EncoderError(f"timm data config crop_mode {settings['crop_mode']!r} at {height}x{width} is not supported by dva's tensor preprocessing yet (center on square inputs, squash)")
    if settings["interpolation"] not in INTERPOLATIONS:
        raise EncoderError(f"timm data config interpolation {settings['interpolation']!r} is not supported by dva's tensor preprocessing (use one of {', '.join(INTERPOLATIONS)})")
    return settings


@register_encoder("visual", "timm")
class TimmEncoder(VisualEncoder):
    """encode(preprocess(uint8 [B, 3, H, W])) -> float32 [B, dim], timm's pooled pre-logits features."""

    def __init__(self, model: str = DEFAULT_TIMM, pretrained: str | None = None, device: str = "cpu"):
        """pretrained: a local weights file (tensors only), or None for timm's pretrained weights of model."""
        import torch

        self.model_name, self.device = model, torch.device(device)
        self.weights_file = str(Path(pretrained).expanduser().resolve()) if pretrained else None
        self.model, self.dropped = load_timm(model, self.weights_file, device)
        self.settings = data_settings(self.model)
        self._mean = torch.tensor(self.settings["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.settings["std"], device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self._features(torch.zeros(1, 3, *self.settings["input_size"], device=self.device)).shape[-1])
        self.sha256 = weights_sha256(self.model)
        self.cast()

    def preprocess(self, images):
        """uint8 [B, 3, H, W] -> normalised float [B, 3, h, w] on the device, like timm's eval transform of the data config."""
        from torchvision.transforms import functional as F

        settings = self.settings
        scale = [math.floor(side / settings["crop_pct"]) for side in settings["input_size"]]
        # centre: the shortest side to input / crop_pct; squash: both sides (timm's transforms_imagenet_eval)
        size = scale[0] if settings["crop_mode"] == "center" else scale
        x = F.center_crop(resized_like_pil(images, self.device, settings["interpolation"], size), settings["input_size"])
        return (x / 255.0 - self._mean) / self._std

    def _features(self, pixels):
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True).flatten(1)

    def encode(self, pixels):
        import torch

        with torch.inference_mode():
            return self._features(self.inputs(pixels)).float()

    def provenance(self) -> dict:
        cfg = self.model.pretrained_cfg
        timms_own = self.weights_file is None and self.model_name != TINY_TIMM  # else a file's weights, or random (tiny)
        return {
            "family": self.family, "model": self.model_name, "architecture": cfg.get("architecture"),
            "weights_file": self.weights_file, "pretrained": (cfg.get("hf_hub_id") or cfg.get("url") or self.model_name) if timms_own else None, "head_dropped": self.dropped,
            "pooling": "pre_logits", **self.settings, "data_config": "timm", "dim": self.dim, "weights_sha256": self.sha256,
        }

    def set_name(self) -> str:
        """timm-<model basename>[-<weights file name>], e.g. timm-efficientnet_b0-enet_b0_8_best_vgaf.safetensors."""
        model = basename(self.model_name.removeprefix("hf-hub:"))
        return set_name("timm", model, basename(self.weights_file)) if self.weights_file else set_name("timm", model)
