"""Grad-CAM, Grad-CAM++, Layer-CAM and Score-CAM from pytorch-grad-cam, on the explorer's
layer and class; Score-CAM's forward passes and its cost."""

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..cam.layers import eval_mode, model_device
from ..errors import ShapCAMError
from ..evaluation.gradcam import grad_cam

#: name shown -> the method of ``evaluation.gradcam``, in the comparison row's order.
#: Score-CAM runs one forward pass per BATCH_SIZE channels of the layer (10 batches of 32
#: images for Lite0's last stage, about 15-30 s on 2 cores): on demand.
METHODS = {
    "Grad-CAM": "gradcam",
    "Grad-CAM++": "gradcampp",
    "Layer-CAM": "layercam",
    "Score-CAM": "scorecam",
}
FAST = ("Grad-CAM", "Grad-CAM++", "Layer-CAM")
SLOW = ("Score-CAM",)
#: Score-CAM's masked images per forward pass.
BATCH_SIZE = 32


def scorecam_passes(channels: int) -> int:
    """Forward passes of the model in Score-CAM on a layer of ``channels`` channels: one
    for the activations, then one per batch of BATCH_SIZE masked images (one a channel)."""
    return 1 + math.ceil(channels / BATCH_SIZE)


def batch_seconds(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Seconds of one forward pass of BATCH_SIZE copies of ``inputs`` (1 x 3 x H x W), in
    eval mode without gradients, as each of Score-CAM's masked batches runs."""
    batch = inputs.to(model_device(model)).expand(BATCH_SIZE, -1, -1, -1)
    cuda = batch.device.type == "cuda"
    with torch.inference_mode(), eval_mode(model):
        started = time.perf_counter()
        model(batch)
        if cuda:
            torch.cuda.synchronize(batch.device)
    return time.perf_counter() - started


def scorecam_seconds(channels: int, seconds_per_pass: float) -> float:
    """Score-CAM's estimated cost: its forward passes (``scorecam_passes``) times the time
    of one pass at BATCH_SIZE (an upper estimate: the first pass and the last are smaller)."""
    return scorecam_passes(channels) * seconds_per_pass


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
    (Score-CAM's passes stay interruptible) or count the passes.
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
            model, layer, METHODS[method], inputs, target, batch_size=BATCH_SIZE, quiet=True
        )
    finally:
        if hook is not None:
            hook.remove()
    return np.asarray(grayscale[0], dtype=np.float32)
