"""Grad-CAM, Grad-CAM++ and Score-CAM from pytorch-grad-cam, on the explorer's layer and class."""

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ShapCAMError
from ..evaluation.gradcam import grad_cam

#: name shown -> the method of ``evaluation.gradcam``. Score-CAM runs one forward pass per
#: channel of the layer (320 for Lite0's last stage, about 15 s on 2 cores): on demand.
METHODS = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcampp", "Score-CAM": "scorecam"}
FAST = ("Grad-CAM", "Grad-CAM++")
SLOW = ("Score-CAM",)


def compare(
    model: torch.nn.Module,
    layer: str,
    inputs: torch.Tensor,
    target: int,
    method: str,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """The (H, W) map in [0, 1] of ``method`` for ``target`` on ``layer``, in eval mode
    (the model's own modes restored after).

    check: called before every forward pass of the model; it may raise to stop the work
    (Score-CAM's hundreds of passes stay interruptible).
    """
    if method not in METHODS:
        raise ShapCAMError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    hook = (
        model.register_forward_pre_hook(lambda _module, _inputs: check())
        if check is not None
        else None
    )
    try:  # quiet: Score-CAM reports progress with tqdm on stderr; keep it out of the notebook
        grayscale = grad_cam(
            model, layer, METHODS[method], inputs, target, batch_size=32, quiet=True
        )
    finally:
        if hook is not None:
            hook.remove()
    return np.asarray(grayscale[0], dtype=np.float32)
