"""The local path at EfficientNet-Lite0's ``blocks.5`` against the general path and captum.

``python -m benchmarks.local_path`` writes ``benchmarks/local_path.json``. One image
(scikit-image's Chelsea), value "prob", baseline "zero", the top-1 class; 49 players.
Measured in one run, medians of ``--repeats`` seeds:

- seconds per map of the general and the local path at equal orderings m (the same
  orderings: ``max_difference`` is the largest |general - local| per cell at one seed),
  as in a run over many images: after one untimed call (the local path checks itself
  against the general path once per grid and block size);
- captum's ShapleyValueSampling on the same game (``perturbations_per_eval`` tuned);
- the mean squared error per cell against a reference of ``--reference`` orderings
  (local path, another seed), less the reference's own variance (the mean of its squared
  standard errors: the reference's noise adds that much to every MSE, and would make
  every estimator look alike at large m), and the time at equal error against captum:
  the product of seconds and MSE (MSE falls as 1/m, so seconds x MSE is the time each
  needs for a given error), captum's over ours.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from shapcam_widgets import ShapCAM, load_model

from .harness import measure, mse
from .scenarios import captum_runner, shapcam_runner, tune_ppe

HERE = Path(__file__).resolve().parent
LAYER = "blocks.5"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_path", description=__doc__)
    parser.add_argument("--orderings", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=HERE / "local_path.json")
    args = parser.parse_args(argv)
    from skimage import data

    device = torch.device("cpu")
    model, preprocess = load_model("efficientnet_lite0")
    image = preprocess(data.chelsea())
    local = ShapCAM(model, LAYER, device=device, path="local")
    general = ShapCAM(model, LAYER, device=device, path="general")
    target = general.game(image).target
    started = time.perf_counter()
    reference = local.explain(image, target, seed=10**6).refine(args.reference)
    reference_seconds = time.perf_counter() - started
    ref = reference.phi.ravel()
    reference_variance = float(np.mean(reference.stderr**2))
    ppe, _ = tune_ppe(general, image, target, (16, 49), device)
    rows = []
    for m in args.orderings:
        timings, runs = {}, {}
        for name, explainer in (("general", general), ("local", local)):
            runs[name] = shapcam_runner(explainer, image, target, m)
            timings[name] = measure(runs[name], args.repeats, device)
            assert runs[name].last.path == name
        timings["captum"] = measure(
            captum_runner(general, image, target, m, ppe), args.repeats, device
        )
        errors = {
            name: mse(timing.outputs, ref) - reference_variance for name, timing in timings.items()
        }
        seconds = {name: timing.seconds for name, timing in timings.items()}
        row = {
            "orderings": m,
            "seconds": seconds,
            "mse": errors,
            "evaluations": runs["local"].last.n_evaluations,
            "max_difference": float(
                np.abs(timings["general"].outputs[0] - timings["local"].outputs[0]).max()
            ),
            "local_speedup_vs_general": seconds["general"] / seconds["local"],
            "local_time_at_equal_error_vs_captum": (seconds["captum"] * errors["captum"])
            / (seconds["local"] * errors["local"]),
            "general_time_at_equal_error_vs_captum": (seconds["captum"] * errors["captum"])
            / (seconds["general"] * errors["general"]),
        }
        rows.append(row)
        print(
            f"m={m:5d}: general {seconds['general']:.3f} s, local {seconds['local']:.3f} s "
            f"(x{row['local_speedup_vs_general']:.1f}), captum {seconds['captum']:.3f} s; "
            f"MSE local {errors['local']:.3g}, captum {errors['captum']:.3g}; time at equal "
            f"error: local x{row['local_time_at_equal_error_vs_captum']:.1f} vs captum; "
            f"max |general - local| {row['max_difference']:.1e}",
            flush=True,
        )
    report = {
        "layer": LAYER,
        "players": reference.phi.size,
        "target": target,
        "image": "skimage.data.chelsea()",
        "reference_orderings": args.reference,
        "reference_seconds": reference_seconds,
        "reference_variance": reference_variance,
        "captum_perturbations_per_eval": ppe,
        "repeats": args.repeats,
        "rows": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
