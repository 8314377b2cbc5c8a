"""open_clip image encoder: any model/pretrained tag open_clip knows, or a local checkpoint file.

Preprocessing runs on batches of uint8 tensors on the encoder's device and matches open_clip's
own eval transform (resize the shortest side with bicubic + antialias, centre crop, normalise).
"""

from __future__ import annotations

import os
from pathlib import Path

from dva.errors import EncoderError, first_line
from dva.pipeline.encoders.base import VisualEncoder, basename, quiet_logging, register_encoder, seeded_init, set_name, weights_sha256

CONFIG_DIR = Path(__file__).parent / "model_configs"  # dva's named architectures (dva-tiny-clip)
_registered = False


DEFAULT_CLIP, DEFAULT_PRETRAINED = "ViT-B-32", "openai"  # the paper's image tower
# the pixels' mean and std: "clip" is the model's own (open_clip's preprocess config); "imagenet" is torchvision's,
# which the seed paper's released code feeds CLIP (dataset.py:169-176 of byeongjin1/abaw10th_imlab-va-)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMS = ("clip", "imagenet")

def _register_configs() -> None:
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def load_clip(model: str, pretrained: str | None, device: str = "cpu"):
    """A frozen open_clip model in eval mode. pretrained: a tag ("openai"), a checkpoint file, or None/"none"
    for a random initialisation seeded with 0 (the same weights on every call)."""
    import open_clip

    _register_configs()
    if pretrained is not None and pretrained.lower() in ("", "none"):
        pretrained = None
    if model not in open_clip.list_models():
        raise EncoderError(f"unknown open_clip model {model!r}: see open_clip.list_models() (e.g. ViT-B-32, ViT-L-14) or use --preset tiny")
    if pretrained is not None and not os.path.isfile(pretrained) and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)[:6]) or "none"
        raise EncoderError(f"--clip-pretrained {pretrained!r} is neither a checkpoint file nor a tag of {model} (tags: {tags})")
    try:
        with seeded_init(), quiet_logging():  # random-init weights (tiny preset, timing runs) are the same every time
            clip = open_clip.create_model(model, pretrained=pretrained, device="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise EncoderError(
            f"cannot load open_clip {model} / {pretrained}: {first_line(exc, 200)} "
            "(weights download once with network; offline, pass a local checkpoint file to --clip-pretrained)"
        ) from None
    return clip.to(device).eval().requires_grad_(False)


@register_encoder("visual", "clip")
class ClipEncoder(VisualEncoder):
    """encode(preprocess(uint8 [B, 3, H, W])) -> float32 [B, dim], the projected image embedding (not normalised)."""

    def __init__(self, model: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, device: str = "cpu", norm: str = "clip"):
        import open_clip
        import torch

        if norm not in NORMS:
            raise EncoderError(f"--clip-norm must be one of {', '.join(NORMS)}, not {norm!r}")
        self.model_name, self.pretrained, self.norm, self.device = model, pretrained, norm, torch.device(device)
        self.model = load_clip(model, pretrained, device)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", 224)
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.mean = tuple(float(m) for m in (cfg.get("mean") if norm == "clip" else IMAGENET_MEAN))
        self.std = tuple(float(s) for s in (cfg.get("std") if norm == "clip" else IMAGENET_STD))
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.resize_mode = cfg.get("resize_mode", "shortest")
        if self.resize_mode != "shortest":
            raise EncoderError(f"open_clip {model}: resize_mode {self.resize_mode!r} is not supported by dva's tensor preprocessing yet")
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self.model.encode_image(torch.zeros(1, 3, self.image_size, self.image_size, device=self.device)).shape[-1])
        self.sha256 = weights_sha256(self.model)
        self.cast()

    def preprocess(self, images):
        """uint8 [B, 3, H, W] -> normalised float [B, 3, S, S] on the device, like open_clip's eval transform."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        x = images.to(self.device, non_blocking=True).float()
        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        # PIL resizes uint8 pixels and rounds; do the same on floats so results agree.
        x = F.resize(x, self.image_size, interpolation=mode, antialias=True).clamp_(0, 255).round_()
        x = F.center_crop(x, [self.image_size, self.image_size])
        return (x / 255.0 - self._mean) / self._std

    def encode(self, pixels):
        import torch

        with torch.inference_mode():
            return self.model.encode_image(self.inputs(pixels)).float()

    def provenance(self) -> dict:
        return {
            "family": self.family,
            "model": self.model_name,
            "pretrained": self.pretrained if self.pretrained not in ("", "none") else None,
            "image_size": self.image_size,
            **({} if self.norm == "clip" else {"norm": self.norm}),  # recorded when not the model's own: older sets stay the same
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "dim": self.dim,
            "weights_sha256": self.sha256,
        }

    def set_name(self) -> str:
        return self.name_for(self.provenance())

    @staticmethod
    def name_for(provenance: dict) -> str:
        """clip-<model>-<pretrained tag, checkpoint file name, or "random">, e.g. clip-ViT-B-32-openai, then -imagenet
        when fed ImageNet's mean and std (also for the provenance a dva 0.1 store recorded)."""
        pretrained = provenance.get("pretrained")
        norm = [] if provenance.get("norm", "clip") == "clip" else [provenance["norm"]]
        return set_name("clip", provenance["model"], basename(pretrained) if pretrained else "random", *norm)

