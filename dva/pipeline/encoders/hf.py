"""transformers image backbone (`AutoModel`): any image model on the hub or in a local directory
(ViT, DeiT, BEiT, DINOv2, Swin, ConvNeXt, ResNet, ... and their face or emotion fine-tunes).

Preprocessing runs on batches of uint8 tensors on the encoder's device, with the settings of the
model's image processor (preprocessor_config.json): resize with antialias (to height x width, or
the shortest side then a centre crop), rescale to [0, 1], normalise. The feature is the model's
pooler_output when it has one, else the CLS token (models with one) or the mean of
last_hidden_state; provenance records which.
"""

from __future__ import annotations

from dva.errors import EncoderError, first_line
from dva.pipeline.encoders.base import VisualEncoder, basename, loading, local_or_hub, quiet_logging, register_encoder, resized_like_pil, seeded_init, set_name, weights_sha256

DEFAULT_HF = "google/vit-base-patch16-224-in21k"
TINY_HF = "dva-tiny-hf"
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's numbers, as image processors store them; others -> bilinear
DEFAULTS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear", "rescale": 1 / 255}  # ViTImageProcessor's


def tiny_config():
    """A 2-layer, 64-wide ViT on 64 px images (16 px patches)."""
    from transformers import ViTConfig

    return ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=64, patch_size=16)


def load_hf(model: str, device: str = "cpu"):
    """(frozen model in eval mode, its image processor's settings dict or None, names of the weights the checkpoint
    lacks) for a hub id, a local directory, or 'dva-tiny-hf' (random init, seed 0). Missing weights (often the
    pooler, which AutoModel adds to every ViT) are seeded too."""
    from transformers import AutoImageProcessor, AutoModel

    source = None if model == TINY_HF else local_or_hub(model, "--hf-model", DEFAULT_HF)
    missing: list[str] = []
    with seeded_init():
        if source is None:
            net = AutoModel.from_config(tiny_config())
        else:
            with loading("image model", model, "--hf-model"):
                net, info = AutoModel.from_pretrained(source, output_loading_info=True)
            missing = list(info.get("missing_keys") or [])
    processor = None
    if source is not None:
        try:
            with quiet_logging():
                processor = AutoImageProcessor.from_pretrained(source).to_dict()
        except (OSError, ValueError):  # no preprocessor_config.json: ViT's defaults at the config's image size
            processor = None
    return net.to(device).eval().requires_grad_(False), processor, missing


def image_settings(processor: dict | None, config) -> dict:
    """The preprocessing an image processor's settings describe: resize ("exact" to [h, w], or "shortest" side to
    an edge then a centre crop to [h, w] or none), interpolation, rescale factor, mean and std (None: no normalising)."""
    if processor is None:
        size = getattr(config, "image_size", 224)
        size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        return {"resize": "exact", "size": size, "crop": None, **DEFAULTS, "mean": list(DEFAULTS["mean"]), "std": list(DEFAULTS["std"]), "from": "default"}
    size = processor.get("size") or {}
    size = {"height": size, "width": size} if isinstance(size, int) else size
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if size.get("height") and size.get("width"):
        resize, target = "exact", [int(size["height"]), int(size["width"])]
    elif size.get("shortest_edge"):
        resize, target = "shortest", [int(size["shortest_edge"])] * 2
    else:
        raise EncoderError(f"image processor size {size!r} is not supported by dva's tensor preprocessing (height/width or shortest_edge)")
    normalise = processor.get("do_normalize", True)
    return {
        "resize": resize, "size": target, "crop": [int(crop["height"]), int(crop["width"])] if crop else None,
        "interpolation": interpolation(processor.get("resample")),
        "rescale": float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0,
        "mean": [float(m) for m in processor.get("image_mean", DEFAULTS["mean"])] if normalise else None,
        "std": [float(s) for s in processor.get("image_std", DEFAULTS["std"])] if normalise else None,
        "from": "preprocessor_config",
    }


def interpolation(resample) -> str:
    """An image processor's resample (a PIL number, or an interpolation mode by name) -> nearest | bilinear | bicubic."""
    if resample is None:
        return "bilinear"
    try:
        return RESAMPLE.get(int(resample), "bilinear")
    except (TypeError, ValueError):
        name = str(getattr(resample, "value", resample)).lower()
        return name if name in RESAMPLE.values() else "bilinear"


@register_encoder("visual", "hf")
class HfImageEncoder(VisualEncoder):
    """encode(preprocess(uint8 [B, 3, H, W])) -> float32 [B, dim]: pooler_output, CLS token, or mean token."""

    def __init__(self, model: str = DEFAULT_HF, pretrained: str | None = None, device: str = "cpu"):
        """pretrained is not used: the weights are the model's own (hub id or directory)."""
        import torch

        self.model_name, self.device = model, torch.device(device)
        self.model, processor, missing = load_hf(model, device)
        self.settings = image_settings(processor, self.model.config)
        if self.settings["mean"] is not None:
            self._mean = torch.tensor(self.settings["mean"], device=self.device).view(1, 3, 1, 1)
            self._std = torch.tensor(self.settings["std"], device=self.device).view(1, 3, 1, 1)
        height, width = self.settings["crop"] or self.settings["size"]
        try:
            with torch.inference_mode():
                output = self.model(pixel_values=torch.zeros(1, 3, height, width, device=self.device))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise EncoderError(f"--hf-model {model!r} is not an image backbone that takes pixel_values alone: {first_line(exc, 200)}") from None
        # a pooler the checkpoint lacks is random (AutoModel adds one to every ViT, DINO's included): not a feature
        if getattr(output, "pooler_output", None) is not None and not any(key.split(".")[0] == "pooler" for key in missing):
            self.pooling = "pooler_output"
        elif output.last_hidden_state.ndim == 3 and getattr(getattr(self.model, "embeddings", None), "cls_token", None) is not None:
            self.pooling = "cls"
        else:
            self.pooling = "mean"
        self.dim = int(self._pool(output).shape[-1])
        self.sha256 = weights_sha256(self.model)
        self.cast()

    def preprocess(self, images):
        """uint8 [B, 3, H, W] -> normalised float [B, 3, h, w] on the device, as the model's image processor."""
        from torchvision.transforms import functional as F

        settings = self.settings
        size = settings["size"] if settings["resize"] == "exact" else settings["size"][0]
        x = resized_like_pil(images, self.device, settings["interpolation"], size)
        if settings["crop"] is not None:
            x = F.center_crop(x, settings["crop"])
        x = x * settings["rescale"]
        return (x - self._mean) / self._std if settings["mean"] is not None else x

    def _pool(self, output):
        if self.pooling == "pooler_output":
            return output.pooler_output.flatten(1)  # ResNet-like models pool to [B, C, 1, 1]
        hidden = output.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(2).mean(dim=2)  # tokens, or [B, C, H, W] maps

    def encode(self, pixels):
        import torch

        with torch.inference_mode():
            return self._pool(self.model(pixel_values=self.inputs(pixels))).float()

    def provenance(self) -> dict:
        settings = self.settings
        return {
            "family": self.family, "model": self.model_name, "model_type": self.model.config.model_type, "pooling": self.pooling,
            "resize": settings["resize"], "size": settings["size"], "crop": settings["crop"], "interpolation": settings["interpolation"],
            "rescale": settings["rescale"], "mean": settings["mean"], "std": settings["std"], "image_processor": settings["from"],
            "dim": self.dim, "weights_sha256": self.sha256,
        }

    def set_name(self) -> str:
        """hf-<model basename>, e.g. hf-vit-base-patch16-224-in21k."""
        return set_name("hf", basename(self.model_name))
