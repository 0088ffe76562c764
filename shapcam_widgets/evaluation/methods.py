"""Map makers: one function per method, each (x, target, seed) -> raw H x W map.

Every maker returns a map at the model's input size (H x W, numpy); the runner scales
it with ``metrics.scale_map`` (ReLU, then min-max) before any metric, for all methods.

- shapcam: this package's ShapCAM at ``layer`` (value, baseline, block size, orderings
  and ``tol`` as configured); shapcam_logit: the same with value "logit". Both also
  return what the sampler did (orderings used, largest standard error, path).
- cam: class activation mapping (Zhou et al. 2016), computed where it is defined: on the
  feature map that feeds the global average pool, weighted by the linear classifier's row
  of the target (no bias). For EfficientNet-Lite0 that map is the head's output (``bn2``,
  1280 x 7 x 7), not ``blocks.6``: the head (1x1 conv, batch norm, ReLU6) is position-wise
  but not linear, so CAM cannot be written with blocks.6's activations. Its cells are the
  same 7 x 7 grid, and it equals Shap-CAM at that map with value "logit" and baseline
  "zero" times n (the CAM identity: the book's chapter 4 and Method notes; tested). CAM
  is refused (ShapCAMError) when the model has no GAP + linear classifier, or when the
  pooled map's grid differs from ``layer``'s.
- gradcam, gradcampp, scorecam, layercam: pytorch-grad-cam's GradCAM, GradCAMPlusPlus,
  ScoreCAM and LayerCAM at ``layer`` with ``ClassifierOutputTarget(target)`` (the logit),
  used as the library ships them, through ``gradcam.grad_cam`` (hooks released, ScoreCAM
  quiet, the model's modes restored).
- center: a Gaussian centred on the image, sigma a quarter of each side.
- random: uniform noise on the layer's cell grid (h x w), upsampled bilinearly like the
  CAMs; seeded per image, so reruns and shards agree.
"""

import numpy as np
import torch
from torch import nn

from ..cam import ShapCAM, spatial_layers
from ..cam.result import upsample_grid
from ..errors import ShapCAMError
from .gradcam import GRAD_CAM_CLASSES, grad_cam, grad_cam_module

METHODS = (
    "shapcam",
    "shapcam_logit",
    "cam",
    "gradcam",
    "gradcampp",
    "scorecam",
    "layercam",
    "center",
    "random",
)

#: how the book and the galleries name each method
DISPLAY_NAMES = {
    "shapcam": "Shap-CAM (prob)",
    "shapcam_logit": "Shap-CAM (logit)",
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "layercam": "Layer-CAM",
    "center": "centre (trivial)",
    "random": "random (trivial)",
}


def map_and_info(made) -> tuple[np.ndarray, dict]:
    """A maker's return as (H x W map, info): info is {} for the makers that return only
    a map (every method but Shap-CAM)."""
    return made if isinstance(made, tuple) else (made, {})


def parse_methods(text: str | list | tuple) -> list[str]:
    """'a,b,c' (or a list) -> validated list of method names, in the given order."""
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ShapCAMError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(METHODS)}"
        )
    if len(set(names)) != len(names):
        raise ShapCAMError(f"a method is listed twice in {','.join(names)}")
    return names


def make_method(
    name: str,
    model: nn.Module,
    layer: str,
    *,
    samples: int = 128,
    value: str = "prob",
    baseline: str = "zero",
    block_size: int = 1,
    tol: float | None = None,
    device: str | torch.device = "cpu",
    scorecam_batch_size: int = 64,
    input_size: int = 224,
):
    """A callable maker(x, target, seed) -> H x W numpy map for method ``name``.

    The Shap-CAM makers return (map, info) instead: info holds ``n_orderings``,
    ``max_stderr`` (in units of the value) and ``path``.
    """
    if name in ("shapcam", "shapcam_logit"):
        explainer = ShapCAM(model, layer, device=device)
        options = {
            "value": "logit" if name == "shapcam_logit" else value,
            "baseline": baseline,
            "block_size": block_size,
        }

        def shapcam(x, target, seed):
            result = explainer.attribute(
                x, target, n_samples=samples, seed=seed, tol=tol, **options
            )
            info = {
                "n_orderings": result.n_orderings,
                "max_stderr": float(result.stderr.max()),
                "path": result.path,
            }
            return result.upsample(tuple(x.shape[-2:])), info

        return shapcam
    if name == "cam":
        return _cam_maker(model, layer, input_size)
    if name in GRAD_CAM_CLASSES:
        return _grad_cam_maker(name, model, layer, scorecam_batch_size)
    if name == "center":
        return center_map
    if name == "random":
        cells = _cells(model, layer, input_size)

        def random_map(x, target, seed):
            rng = np.random.default_rng(seed)
            return upsample_grid(rng.random(cells), tuple(x.shape[-2:]))

        return random_map
    raise ShapCAMError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")


def center_map(x, target=None, seed=None) -> np.ndarray:
    """A Gaussian centred on the image, sigma = a quarter of the side."""
    height, width = x.shape[-2:]
    ys = (np.arange(height) - (height - 1) / 2) / (height / 4)
    xs = (np.arange(width) - (width - 1) / 2) / (width / 4)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))


def _cells(model, layer, input_size) -> tuple[int, int]:
    shapes = spatial_layers(model, input_size)
    if layer not in shapes:
        raise ShapCAMError(f"layer {layer!r} is not a spatial layer of the model")
    return shapes[layer][1:]


def _grad_cam_maker(name, model, layer, scorecam_batch_size):
    grad_cam_module(model, layer)  # an unknown layer is refused before any image

    def grad_cam_map(x, target, seed):
        maps = grad_cam(model, layer, name, x, target, batch_size=scorecam_batch_size)
        return np.asarray(maps[0], dtype=np.float64)

    return grad_cam_map


def _pool_and_classifier(model: nn.Module):
    """(global pool module, linear classifier) for timm- and torchvision-style models."""
    pool = _first_attribute(model, "global_pool", "avgpool")
    if hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
    else:
        classifier = _first_attribute(model, "fc", "classifier")
    if pool is None or not isinstance(classifier, nn.Linear):
        raise ShapCAMError(
            "CAM needs a model that ends in a global average pool (global_pool or avgpool) "
            "followed by one linear classifier; this model does not"
        )
    pool_type = getattr(pool, "pool_type", "avg")
    if pool_type != "avg":
        raise ShapCAMError(f"CAM needs global average pooling; this model's pool is {pool_type!r}")
    return pool, classifier


def _first_attribute(model, *names):
    for name in names:
        if getattr(model, name, None) is not None:
            return getattr(model, name)
    return None


def _cam_maker(model, layer, input_size):
    pool, classifier = _pool_and_classifier(model)
    cells = _cells(model, layer, input_size)

    def cam(x, target, seed):
        captured = []
        hook = pool.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
        try:
            with torch.inference_mode():
                model(x)
        finally:
            hook.remove()
        features = captured[0][0].float()
        if features.dim() != 3 or tuple(features.shape[1:]) != tuple(cells):
            raise ShapCAMError(
                f"CAM is defined on the map that feeds the global pool, here "
                f"{tuple(features.shape)}; it is on a different grid from layer {layer!r} "
                f"{tuple(cells)}, so CAM is not available for this layer"
            )
        with torch.no_grad():
            weights = classifier.weight[int(target)].float()
            grid = torch.einsum("k,khw->hw", weights, features)
        return upsample_grid(grid.cpu().numpy(), tuple(x.shape[-2:]))

    return cam
