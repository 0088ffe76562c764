"""How spread are pytorch-grad-cam ScoreCAM's channel weights on EfficientNet-Lite0?

Chapter 6 reads the output. ScoreCAM weights the layer's channels by a softmax, over the
channels, of the class logit on the image masked by each channel; when those logits are
close, the weights are close to uniform and the map is close to the channel mean.

    python scripts/scorecam_weights.py [--images 20] [--out results/scorecam_weights.json]
"""

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from shapcam_widgets import load_model
from shapcam_widgets.evaluation.data import ImageNetLOC, resolve_root
from shapcam_widgets.evaluation.gradcam import grad_cam_object, grad_cam_targets


def channel_weights(model, layer, x, target):
    """(ScoreCAM's weights (C,), the layer's activation (C, h, w)) for one image.

    The weights are internals of the library's ScoreCAM (its ``get_cam_weights``), which
    the maps of ``evaluation.gradcam.grad_cam`` do not show: this reads them from the
    CAM object that ``grad_cam_object`` sets up (hooks, eval mode, quiet, batch 64).
    """
    with grad_cam_object(model, layer, "scorecam", batch_size=64) as cam:
        cam.activations_and_grads(x)
        activations = cam.activations_and_grads.activations[0].numpy()
        module = cam.target_layers[0]
        targets = grad_cam_targets(target, len(x))
        weights = cam.get_cam_weights(x, module, targets, activations, None)[0]
    return weights, activations[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageNet LOC folder")
    parser.add_argument("--images", type=int, default=20, help="first N images of the list")
    parser.add_argument("--layer", default="blocks.6")
    parser.add_argument("--out", default="results/scorecam_weights.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model, preprocess = load_model("efficientnet_lite0")
    dataset = ImageNetLOC(resolve_root(args.data))
    largest, effective, negative = [], [], []
    for sample in dataset.samples[: args.images]:
        x = preprocess(dataset.load(sample))
        weights, activation = channel_weights(model, args.layer, x, sample.label)
        largest.append(float(weights.max()))
        effective.append(float(1 / np.sum(weights**2)))
        negative.append(float((activation < 0).mean()))
    summary = {
        "model": "efficientnet_lite0",
        "layer": args.layer,
        "channels": int(weights.size),
        "images": len(largest),
        "target": "label",
        "largest_weight_median": float(np.median(largest)),
        "effective_channels_median": float(np.median(effective)),
        "effective_channels_min": float(np.min(effective)),
        "negative_activation_share": float(np.mean(negative)),
        "grad_cam_version": version("grad-cam"),
        "command": "python scripts/scorecam_weights.py "
        f"--images {args.images} --layer {args.layer} --out {args.out}",
    }
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
