"""pytorch-grad-cam, driven one way: the evaluation's makers, the explorer's comparison
panel, the benchmarks (through the makers) and scripts/scorecam_weights.py go through here.

``grad_cam(model, layer, method, images, targets)`` returns the library's maps (B, H, W),
float32 in [0, 1] (its ReLU, upsampling and min-max per map), for the methods of
``GRAD_CAM_CLASSES`` used as the library ships them. ``grad_cam_object`` is the same
setting-up as a context manager around the library's CAM object, for code that needs its
internals (scripts/scorecam_weights.py reads ScoreCAM's channel weights). Both handle:

- a fresh CAM object per call, its hooks released on the way out: they would otherwise
  keep storing activations during every later forward pass (the metrics', Shap-CAM's);
- eval mode for the call, every module's own mode restored after (pytorch-grad-cam calls
  ``model.eval()`` and leaves the model so; the explorer's model may be training);
- ScoreCAM's batch of masked images and its tqdm bar (one per image, on stderr), silenced;
- the parameters' gradients dropped after (``model.zero_grad(set_to_none=True)``);
- the images copied onto the model's device (a copy outside inference mode: an inference
  tensor cannot be saved for backward).

pytorch_grad_cam is imported on first use: importing it is slow.
"""

import contextlib
import io
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..cam.layers import eval_mode, model_device, resolve_layer
from ..errors import ShapCAMError

#: method name -> pytorch_grad_cam class name.
GRAD_CAM_CLASSES = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
    "layercam": "LayerCAM",
}
#: ScoreCAM's default batch of masked images (one forward pass per channel in all).
SCORECAM_BATCH_SIZE = 64


def _library():
    """The pytorch_grad_cam package (with its model_targets); ShapCAMError when missing."""
    try:
        import pytorch_grad_cam
        import pytorch_grad_cam.utils.model_targets  # noqa: F401
    except ImportError as error:
        raise ShapCAMError(
            "the Grad-CAM family needs pytorch-grad-cam: pip install grad-cam"
        ) from error
    return pytorch_grad_cam


def grad_cam_module(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The module of ``model`` named (or given as) ``layer``; ShapCAMError if unknown."""
    return dict(model.named_modules())[resolve_layer(model, layer)]


def grad_cam_targets(targets, count: int) -> list:
    """pytorch-grad-cam targets for ``count`` images: a class index (the same for all) or
    one per image; a class index k is ``ClassifierOutputTarget(k)`` (the logit), a
    pytorch-grad-cam target object is kept as it is."""
    make_target = _library().utils.model_targets.ClassifierOutputTarget
    targets = [targets] * count if np.ndim(targets) == 0 else list(targets)
    if len(targets) != count:
        raise ShapCAMError(f"{len(targets)} targets for {count} images: give one per image")
    return [t if callable(t) else make_target(int(t)) for t in targets]


@contextlib.contextmanager
def grad_cam_object(
    model: nn.Module,
    layer: str | nn.Module,
    method: str,
    *,
    batch_size: int = SCORECAM_BATCH_SIZE,
    quiet: bool | None = None,
) -> Iterator:
    """The pytorch-grad-cam object of ``method`` on ``layer``, for one block.

    Inside the block the model is in eval mode and the object's hooks are on; on the way
    out the hooks are released, the gradients dropped and the modules' modes restored.
    batch_size: ScoreCAM's masked images per forward pass (other methods ignore it).
    quiet: send stderr to nowhere inside the block; None: for ScoreCAM only (its tqdm bar).
    """
    if method not in GRAD_CAM_CLASSES:
        raise ShapCAMError(
            f"unknown pytorch-grad-cam method {method!r}; valid: {', '.join(GRAD_CAM_CLASSES)}"
        )
    library = _library()
    module = grad_cam_module(model, layer)
    quiet = method == "scorecam" if quiet is None else quiet
    with (
        contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext(),
        eval_mode(model),
    ):
        cam = getattr(library, GRAD_CAM_CLASSES[method])(model=model, target_layers=[module])
        if method == "scorecam":
            cam.batch_size = batch_size
        try:
            yield cam
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)


def grad_cam(
    model: nn.Module,
    layer: str | nn.Module,
    method: str,
    images: torch.Tensor,
    targets,
    *,
    batch_size: int = SCORECAM_BATCH_SIZE,
    quiet: bool | None = None,
) -> np.ndarray:
    """pytorch-grad-cam's ``method`` maps (B, H, W) of ``images`` (B x 3 x H x W) on
    ``layer``: float32 in [0, 1], as the library returns them.

    targets: a class index for all images or one per image (see ``grad_cam_targets``);
    batch_size, quiet: as for ``grad_cam_object``.
    """
    with grad_cam_object(model, layer, method, batch_size=batch_size, quiet=quiet) as cam:
        inputs = images.to(model_device(model)).clone()
        return cam(input_tensor=inputs, targets=grad_cam_targets(targets, len(images)))
