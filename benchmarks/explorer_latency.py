"""Latency of the Shap-CAM explorer (issue 4): what a student waits for after a click.

Measures, on EfficientNet-Lite0's last stage (blocks.6, 7 x 7 cells) with the explorer in
its normal background mode:
- first map: from changing the class to the first Shap-CAM map drawn for it;
- full: from changing the class until the requested orderings (default 1,024) are done
  and drawn;
- engine only: ShapCAM.attribute for the same number of orderings, no widgets.
Targets (issue 4, 2 CPU cores): first map within 1 s, 1,024 orderings within 3 s.

    python -m benchmarks.explorer_latency [--orderings 1024] [--classes 3] [--json out.json]
"""

import argparse
import json
import statistics
import threading
import time

import torch

from shapcam_widgets import ShapCAM, load_model
from shapcam_widgets.widgets import ShapCAMExplorer

LAYER = "blocks.6"


def class_change(explorer: ShapCAMExplorer, target: int, n_orderings: int) -> dict:
    """Seconds from setting the class to its first drawn map, and to the full count."""
    drawn = threading.Event()
    first: list[float] = []

    def on_draw(_change):
        settings = explorer.settings
        if settings is not None and settings.target == target and not first:
            first.append(time.perf_counter())
            drawn.set()

    explorer.panels.efficiency.observe(on_draw, names="value")  # redrawn with every map
    started = time.perf_counter()
    explorer.controls.target.value = target
    explorer.wait(600)
    done = time.perf_counter()
    explorer.panels.efficiency.unobserve(on_draw, names="value")
    result = explorer.result
    assert result.target == target and result.n_orderings >= n_orderings, explorer.error
    return {
        "target": target,
        "first_map_s": round(first[0] - started, 3) if first else None,
        "full_s": round(done - started, 3),
        "orderings": result.n_orderings,
        "path": result.path,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orderings", type=int, default=1024, help="a power of two <= 4096")
    parser.add_argument("--classes", type=int, default=3, help="class changes to time (<= 4)")
    parser.add_argument("--image", default="chelsea")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    model, preprocess = load_model("efficientnet_lite0")
    explorer = ShapCAMExplorer(
        model, preprocess=preprocess, layer=LAYER, imagenet=False, n_samples=1, device="cpu"
    )
    explorer.wait(600)
    explorer.set(image=args.image)
    explorer.wait(600)
    explorer.set(n_samples=args.orderings)  # the top-1 class at full count: warms caches
    explorer.wait(600)
    targets = [value for _, value in explorer.controls.target.options][1 : 1 + args.classes]
    runs = [class_change(explorer, target, args.orderings) for target in targets]

    cam = ShapCAM(model, LAYER, device="cpu")
    inputs = explorer.engine.inputs(args.image)
    started = time.perf_counter()
    reference = cam.attribute(inputs, targets[0], n_samples=args.orderings, seed=1)
    engine_s = time.perf_counter() - started

    report = {
        "model": "efficientnet_lite0",
        "layer": LAYER,
        "torch_threads": torch.get_num_threads(),
        "orderings": args.orderings,
        "path": reference.path,
        "runs": runs,
        "first_map_median_s": statistics.median(r["first_map_s"] for r in runs),
        "full_median_s": statistics.median(r["full_s"] for r in runs),
        "attribute_only_s": round(engine_s, 3),
        "targets_s": {"first_map": 1.0, "full_1024": 3.0},
    }
    print(
        f"explorer latency, Lite0 {LAYER}, {report['torch_threads']} torch threads, "
        f"{reference.path} path"
    )
    for run in runs:
        print(
            f"  class #{run['target']:>4}: first map {run['first_map_s']:.3f} s, "
            f"{run['orderings']} orderings {run['full_s']:.3f} s"
        )
    print(
        f"  median: first map {report['first_map_median_s']:.3f} s (target 1 s), "
        f"{args.orderings} orderings {report['full_median_s']:.3f} s (target 3 s)"
    )
    print(f"  ShapCAM.attribute alone, {args.orderings} orderings: {engine_s:.3f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
