"""The summary of an evaluation's records: means, bootstrap intervals, agreement between
methods, timing and environment; written as ``<out>.json`` and ``<out>.csv``."""

import csv
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from . import distributed, metrics
from .records import records_path

#: The per-image metrics, with the summary key each one is averaged into.
METRICS = (
    "avg_drop",
    "avg_increase",
    "deletion_auc",
    "insertion_auc",
    "energy_pointing_game",
    "pointing_game",
)


def summarize(done, skipped, dataset, config, *, device=None, command=None) -> dict:
    """The summary dict written to results.json.

    The configured methods are summarized on the images that have records of all of
    them (paired); a method found only in the records (added by an earlier run with other
    ``--methods``, e.g. Score-CAM on the first images) on the images it has.
    """
    evaluated = [
        sample
        for sample in dataset.samples
        if all((sample.image_id, name) in done for name in config.methods)
    ]
    found = dict.fromkeys(method for _, method in done)
    methods = {}
    for name in [*config.methods, *(m for m in found if m not in config.methods)]:
        own = [s for s in dataset.samples if (s.image_id, name) in done]
        samples = evaluated if name in config.methods else own
        records = [done[(sample.image_id, name)] for sample in samples]
        entry, ci = {}, {}
        for metric in METRICS:
            values = np.array([r[metric] for r in records], dtype=np.float64)
            entry[metric] = float(values.mean()) if len(values) else None
            low, high = metrics.bootstrap_ci(values, config.bootstrap, config.seed)
            ci[metric] = [low, high] if len(values) else None
        seconds = [r["seconds"] for r in records]
        entry["seconds_per_image"] = float(np.mean(seconds)) if seconds else None
        entry["n_images"] = len(records)
        entry["images"] = "paired" if name in config.methods else "own"
        entry["degenerate_maps"] = sum(r["degenerate_map"] for r in records)
        entry["ci"] = ci
        methods[name] = entry
    first = [done[(s.image_id, config.methods[0])] for s in evaluated]
    skipped_here = [
        {"image_id": s.image_id, "reason": skipped[s.image_id]["skipped"]}
        for s in dataset.samples
        if s.image_id in skipped
    ] + [{"image_id": image_id, "reason": reason} for image_id, reason in dataset.invalid]
    return {
        "model": config.model,
        "layer": config.layer,
        "n_images": len(evaluated),
        "target": config.target,
        "methods": methods,
        "agreement": agreement(done, [s.image_id for s in evaluated]),
        "top1_accuracy": (
            float(np.mean([r["predicted"] == r["label"] for r in first])) if first else None
        ),
        "settings": {
            **config.key(),
            "methods": list(config.methods),
            "bootstrap_resamples": config.bootstrap,
            "ci_level": 0.95,
            "step": config.step or "8 rows of the input per step",
            "map_scaling": "ReLU, then min-max to [0, 1], for every method",
            "units": "avg_drop and avg_increase in %, the others in 0-1",
            "seconds_per_image": "wall time to make one map; the metrics are not counted",
            "boxes": "union of all boxes of the image, mapped onto the model input grid",
        },
        "data": str(dataset.root),
        "n_listed": len(dataset.samples) + len(dataset.invalid),
        "n_skipped": len(skipped_here),
        "skipped": skipped_here,
        "duplicate_rows": [
            {"image_id": image_id, "reason": reason} for image_id, reason in dataset.duplicates
        ],
        "environment": environment(device),
        "command": command,
    }


#: Pairs of methods whose maps are compared image by image (Spearman's rank correlation
#: of their cell grids), where both have records with grids.
AGREEMENT_PAIRS = (
    ("shapcam", "cam"),
    ("shapcam", "gradcam"),
    ("shapcam", "gradcampp"),
    ("shapcam", "shapcam_logit"),
    ("shapcam_logit", "cam"),
    ("shapcam_logit", "gradcam"),
    ("cam", "gradcam"),
)


def agreement(done: dict, image_ids: list[str]) -> dict:
    """{"a vs b": median, quartiles and n of the per-image rank correlation of the grids}.

    Images where either map is constant (no ranking) are left out and counted.
    """
    from scipy.stats import spearmanr

    summary = {}
    for a, b in AGREEMENT_PAIRS:
        pairs = [
            (done[(i, a)].get("grid"), done[(i, b)].get("grid"))
            for i in image_ids
            if (i, a) in done and (i, b) in done
        ]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        rhos = []
        for x, y in pairs:
            x, y = np.ravel(x), np.ravel(y)
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                rhos.append(float(spearmanr(x, y).statistic))
        q1, median, q3 = np.percentile(rhos, [25, 50, 75]) if rhos else (None,) * 3
        summary[f"{a} vs {b}"] = {
            "median": None if median is None else float(median),
            "quartiles": None if q1 is None else [float(q1), float(q3)],
            "mean": float(np.mean(rhos)) if rhos else None,
            "n_images": len(rhos),
            "n_constant": len(pairs) - len(rhos),
        }
    return summary


def environment(device=None) -> dict:
    """Package versions and machine, for results.json."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("shapcam-widgets", "torch", "torchvision", "timm", "grad-cam", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    device = torch.device(device) if device is not None else torch.device("cpu")
    return {
        "python": platform.python_version(),
        "packages": packages,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "world_size": distributed.rank_and_world()[1],
    }


def write_summary(out: Path, summary: dict) -> None:
    """results.json (the summary, with the records file's name) and results.csv."""
    summary = {**summary, "records": records_path(out).name}
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, out)
    with open(out.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["method", "n_images"]
        for metric in METRICS:
            header += [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
        writer.writerow([*header, "seconds_per_image"])
        for name, entry in summary["methods"].items():
            row = [name, entry["n_images"]]
            for metric in METRICS:
                row += [entry[metric], *(entry["ci"][metric] or [None, None])]
            writer.writerow([*row, entry["seconds_per_image"]])
