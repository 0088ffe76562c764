"""Grad-CAM, Grad-CAM++ and Score-CAM from pytorch-grad-cam, on the explorer's layer and class."""

import contextlib
import io
from collections.abc import Callable

import numpy as np
import torch

from ..cam.layers import eval_mode
from ..errors import ShapCAMError

#: name shown -> pytorch_grad_cam class name. Score-CAM runs one forward pass per
#: channel of the layer (320 for Lite0's last stage, about 15 s on 2 cores): on demand.
METHODS = {"Grad-CAM": "GradCAM", "Grad-CAM++": "GradCAMPlusPlus", "Score-CAM": "ScoreCAM"}
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
    """The (H, W) map in [0, 1] of ``method`` for ``target`` on ``layer``.

    check: called before every forward pass of the model; it may raise to stop the work
    (Score-CAM's hundreds of passes stay interruptible).
    """
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as error:
        raise ShapCAMError(
            "the comparison maps need pytorch-grad-cam: pip install grad-cam"
        ) from error
    if method not in METHODS:
        raise ShapCAMError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    module = dict(model.named_modules())[layer]
    hook = (
        model.register_forward_pre_hook(lambda _module, _inputs: check())
        if check is not None
        else None
    )
    try:  # Score-CAM reports progress with tqdm on stderr: keep that out of the notebook
        with (
            contextlib.redirect_stderr(io.StringIO()),
            eval_mode(model),  # pytorch-grad-cam sets eval mode and leaves it so
            getattr(pytorch_grad_cam, METHODS[method])(model=model, target_layers=[module]) as cam,
        ):
            if method == "Score-CAM":
                cam.batch_size = 32
            parameter = next(model.parameters())
            grayscale = cam(
                input_tensor=inputs.to(parameter.device).clone(),
                targets=[ClassifierOutputTarget(int(target))],
            )
    finally:
        if hook is not None:
            hook.remove()
    return np.asarray(grayscale[0], dtype=np.float32)
