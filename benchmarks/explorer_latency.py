"""Latency and memory of the Shap-CAM explorer (issues 4 and 11): what a student waits
for after a click, and what the kernel holds after many clicks.

Measures, on EfficientNet-Lite0 with the explorer in its normal background mode, on each
layer (default: the last stage blocks.6, 7 x 7 cells, fast path; and blocks.5, 7 x 7
cells, local path):
- first map: from changing the class to the first Shap-CAM map drawn for it;
- full: from changing the class until the requested orderings (default 1,024) are done
  and drawn;
- engine only: ShapCAM.attribute for the same number of orderings, no widgets.
Then the kernel's memory (resident set) before and after scripted interactions (images,
classes, sample counts, seeds, values, baselines, comparisons), with the bytes in the
explorer's caches and their caps. Targets (issue 4, 2 CPU cores, blocks.6): first map
within 1 s, 1,024 orderings within 3 s.

    python -m benchmarks.explorer_latency [--orderings 1024] [--classes 3]
        [--layers blocks.6 blocks.5] [--interactions 200] [--json out.json]

The top-level figures of the JSON are those of the first layer; "layers" has each.
"""

import argparse
import json
import random
import statistics
import threading
import time
from pathlib import Path

import torch

from shapcam_widgets import ShapCAM, load_model
from shapcam_widgets.widgets import ShapCAMExplorer
from shapcam_widgets.widgets.engine import ENTRY_BYTES, IMAGE_BYTES
from shapcam_widgets.widgets.explorer import COMPARISON_BYTES


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


def measure_layer(model, preprocess, layer: str, args) -> dict:
    """First-map and full latencies of class changes on ``layer``, and attribute alone."""
    explorer = ShapCAMExplorer(
        model, preprocess=preprocess, layer=layer, imagenet=False, n_samples=1, device="cpu"
    )
    explorer.wait(600)
    explorer.set(image=args.image)
    explorer.wait(600)
    explorer.set(n_samples=args.orderings)  # the top-1 class at full count: warms caches
    explorer.wait(600)
    targets = [value for _, value in explorer.controls.target.options][1 : 1 + args.classes]
    runs = [class_change(explorer, target, args.orderings) for target in targets]
    inputs = explorer.engine.inputs(args.image)
    explorer.close()

    cam = ShapCAM(model, layer, device="cpu")
    started = time.perf_counter()
    reference = cam.attribute(inputs, targets[0], n_samples=args.orderings, seed=1)
    engine_s = time.perf_counter() - started
    report = {
        "layer": layer,
        "path": reference.path,
        "runs": runs,
        "first_map_median_s": statistics.median(r["first_map_s"] for r in runs),
        "full_median_s": statistics.median(r["full_s"] for r in runs),
        "attribute_only_s": round(engine_s, 3),
    }
    print(f"explorer latency, Lite0 {layer}, {reference.path} path")
    for run in runs:
        print(
            f"  class #{run['target']:>4}: first map {run['first_map_s']:.3f} s, "
            f"{run['orderings']} orderings {run['full_s']:.3f} s"
        )
    print(
        f"  median: first map {report['first_map_median_s']:.3f} s, "
        f"{args.orderings} orderings {report['full_median_s']:.3f} s"
    )
    print(f"  ShapCAM.attribute alone, {args.orderings} orderings: {engine_s:.3f} s")
    return report


def resident_mib() -> float:
    """The process's resident set in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_memory(model, preprocess, layers: list[str], interactions: int) -> dict:
    """Resident memory before and during ``interactions`` scripted changes of setting
    (at each quarter: growth that stops after the first quarter is warm-up, such as
    the allocator's arenas and the first use of a layer or of Grad-CAM, not a leak)."""
    explorer = ShapCAMExplorer(
        model, preprocess=preprocess, layer=layers[0], imagenet=False, n_samples=8, device="cpu"
    )
    explorer.wait(600)
    before = resident_mib()
    rng = random.Random(0)
    images = list(explorer.controls.image.options)
    resident = []
    for done in range(1, interactions + 1):
        change = rng.choice(["image", "class", "n_samples", "seed", "value", "compare", "layer"])
        if change == "image":
            explorer.set(image=rng.choice(images))
        elif change == "class":
            explorer.set(target=rng.choice(explorer.controls.target.options)[1])
        elif change == "n_samples":
            explorer.set(n_samples=rng.choice([1, 2, 4, 8, 16, 32, 64]))
        elif change == "seed":
            explorer.set(seed=rng.randrange(8))
        elif change == "value":
            explorer.set(value=rng.choice(["prob", "logit"]), baseline=rng.choice(["zero", "mean"]))
        elif change == "compare":
            explorer.set(compare=not explorer.controls.compare.value)
        else:
            explorer.set(layer=rng.choice(layers))
        explorer.wait(600)
        assert explorer.error is None, explorer.error
        if done % max(1, interactions // 4) == 0:
            resident.append([done, round(resident_mib(), 1)])
    engine = explorer.engine
    report = {
        "interactions": interactions,
        "resident_before_mib": round(before, 1),
        "resident_mib": resident,  # [interactions done, MiB] at each quarter
        "cache_mib": {
            "images": round(engine._prepared.nbytes() / 2**20, 1),
            "games": round(engine._entries.nbytes() / 2**20, 1),
            "comparisons": round(explorer._comparisons.nbytes() / 2**20, 1),
        },
        "cap_mib": {
            "images": IMAGE_BYTES / 2**20,
            "games": ENTRY_BYTES / 2**20,
            "comparisons": COMPARISON_BYTES / 2**20,
        },
    }
    explorer.close()
    print(
        f"memory: resident {before:.0f} MiB before, then after n interactions (n, MiB): "
        f"{resident}; caches {report['cache_mib']} MiB, caps {report['cap_mib']} MiB"
    )
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orderings", type=int, default=1024, help="a power of two <= 4096")
    parser.add_argument("--classes", type=int, default=3, help="class changes to time (<= 4)")
    parser.add_argument("--layers", nargs="+", default=["blocks.6", "blocks.5"])
    parser.add_argument("--interactions", type=int, default=200)
    parser.add_argument("--image", default="chelsea")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    model, preprocess = load_model("efficientnet_lite0")
    layers = {layer: measure_layer(model, preprocess, layer, args) for layer in args.layers}
    first = layers[args.layers[0]]
    report = {
        "model": "efficientnet_lite0",
        **first,
        "torch_threads": torch.get_num_threads(),
        "orderings": args.orderings,
        "targets_s": {"first_map": 1.0, "full_1024": 3.0},
        "layers": layers,
        "memory": measure_memory(model, preprocess, args.layers, args.interactions),
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
