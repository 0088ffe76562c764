"""Model-parameter randomisation sanity check (Adebayo et al. 2018) for Shap-CAM and the CAMs.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for Saliency Maps",
NeurIPS 2018: a map that explains the model should change when the model's weights are
randomised. Cascading randomisation from the top: step 0 is the trained model; step 1
re-initialises the classifier, step 2 also the head (conv_head and bn2), then blocks.6,
blocks.5, ..., blocks.0 and finally the stem (conv_stem and bn1), cumulatively. At every
step each method's map on the randomised model is compared with its map on the trained
model (label class as target): Spearman rank correlation on the layer's h x w cell grid
(the 224 x 224 maps average-pooled to it) and SSIM (scikit-image, the 224 x 224 maps
min-max scaled to [0, 1], data_range=1), each on the signed and on the absolute maps.

Re-initialisation is PyTorch's default init, ``module.reset_parameters()`` of every
module under the stage that has one (convolutions and the linear layer: Kaiming-uniform
weights with a = sqrt(5) and uniform biases; batch norms: weight 1, bias 0, running mean 0
and variance 1), with ``torch.manual_seed(seed + 1)`` before each module, exactly as
Quantus 0.6's MPRT does (``PyTorchModel.get_random_layer_generator``), so that its scores
can be reproduced (``--quantus-images``). Work is on a deepcopy; the loaded model is never
modified.

Shap-CAM runs with few orderings here, so its map carries sampling noise: step 0 compares
two Shap-CAM maps of the trained model with different seeds, the ceiling that its later
steps should be read against (for the deterministic methods step 0 is 1).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/sanity_checks.py --limit 100
    .venv/bin/python scripts/sanity_checks.py --quantus-images 2    # Quantus cross-check

Files under --out (default results/sanity/): ``records.jsonl`` (a config line, then one
line per image, appended as each image finishes: a rerun skips the images already there)
and ``sanity.json`` (the summary, rewritten after every image); ``quantus_mprt.json``
from --quantus-images. A rank correlation with a constant map (all zero, e.g. Grad-CAM's
ReLU of a negative sum, or Shap-CAM on a model whose output no longer moves) is undefined:
NaN in the records (Python's json writes it as NaN), counted as n_nan in the summary.
"""

import argparse
import copy
import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from skimage.metrics import structural_similarity
from torch import nn
from tqdm.auto import tqdm

from shapcam_widgets import load_model
from shapcam_widgets.cam import spatial_layers
from shapcam_widgets.cam.result import upsample_grid
from shapcam_widgets.errors import ShapCAMError
from shapcam_widgets.evaluation.data import ImageNetLOC, resolve_root
from shapcam_widgets.evaluation.methods import make_method, map_and_info
from shapcam_widgets.evaluation.runner import image_seed

try:
    from shapcam_widgets.evaluation.runner import environment
except ImportError:  # moved to evaluation.summary by the records/summary split
    from shapcam_widgets.evaluation.summary import environment

SHAPCAM_METHODS = ("shapcam", "shapcam_logit")
DEFAULT_METHODS = ("shapcam", "gradcam", "gradcampp", "layercam")
SCORES = ("spearman", "spearman_abs", "ssim", "ssim_abs")
#: Top-level modules re-initialised together, as one stage (timm's EfficientNet names).
GROUPS = {"head": ("conv_head", "bn2"), "stem": ("conv_stem", "bn1")}
INIT = (
    "PyTorch default init: module.reset_parameters() of every module under the stage that "
    "has one (Conv2d/Linear: Kaiming-uniform weight with a=sqrt(5), uniform bias in "
    "+-1/sqrt(fan_in); BatchNorm: weight 1, bias 0, running mean 0, running var 1), with "
    "torch.manual_seed(seed + 1) before each module as Quantus 0.6's MPRT does; modules of "
    "the same shape therefore get the same initial values"
)


# ---------------------------------------------------------------- the cascade


def resettable(model: nn.Module, prefix: str) -> list[str]:
    """Names of the modules at or under ``prefix`` that have ``reset_parameters``."""
    return [
        name
        for name, module in model.named_modules()
        if (name == prefix or name.startswith(prefix + ".")) and hasattr(module, "reset_parameters")
    ]


def stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The cascade's stages from the top: (stage name, modules re-initialised in it).

    One stage per top-level child that holds a resettable module, in reverse order; the
    children of a top-level ``blocks`` sequence are stages of their own, and timm's
    conv_head + bn2 ("head") and conv_stem + bn1 ("stem") are one stage each.
    """
    found = []
    for name, child in reversed(list(model.named_children())):
        if name == "blocks" and isinstance(child, (nn.Sequential, nn.ModuleList)):
            for index in reversed(range(len(child))):
                found.append((f"blocks.{index}", resettable(model, f"blocks.{index}")))
        else:
            found.append((name, resettable(model, name)))
    found = [(name, modules) for name, modules in found if modules]
    for group, members in GROUPS.items():
        names = [name for name, _ in found]
        if all(member in names for member in members):
            first = min(names.index(member) for member in members)
            merged = [m for name, modules in found if name in members for m in modules]
            found = [entry for entry in found if entry[0] not in members]
            found.insert(first, (group, merged))
    return found


def reinitialise(model: nn.Module, names: list[str], seed: int) -> None:
    """``reset_parameters()`` of the named modules, each after torch.manual_seed(seed + 1);
    the caller's global RNG state is restored afterwards."""
    modules = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]):
        for name in names:
            torch.manual_seed(seed + 1)
            modules[name].reset_parameters()


def cascade(model: nn.Module, seed: int, plan: list[tuple[str, list[str]]] | None = None):
    """Yield (step, stage name, modules re-initialised so far, model) for steps 0..K.

    Step 0 is a deepcopy of ``model`` (eval mode), unchanged; step k has stages 1..k of
    ``plan`` (default ``stages(model)``) re-initialised. The same copy is modified in
    place from step to step; ``model`` itself is never touched.
    """
    plan = stages(model) if plan is None else plan
    work = copy.deepcopy(model).eval()
    done: list[str] = []
    yield 0, "trained", [], work
    for step, (name, modules) in enumerate(plan, start=1):
        reinitialise(work, modules, seed)
        done = [*done, *modules]
        yield step, name, done, work


# ---------------------------------------------------------------- comparing maps


def pool(saliency: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """The map averaged over each cell of an h x w grid."""
    tensor = torch.as_tensor(np.asarray(saliency, dtype=np.float64))[None, None]
    return nn.functional.adaptive_avg_pool2d(tensor, cells)[0, 0].numpy()


def minmax(saliency: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]; a constant map becomes all zeros."""
    saliency = np.asarray(saliency, dtype=np.float64)
    span = saliency.max() - saliency.min()
    if not np.isfinite(span) or span <= 0:
        return np.zeros_like(saliency)
    return (saliency - saliency.min()) / span


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two arrays (NaN when one is constant)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b)[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the two maps min-max scaled to [0, 1] (data_range 1, skimage defaults)."""
    return float(structural_similarity(minmax(a), minmax(b), data_range=1.0))


def compare(reference: np.ndarray, other: np.ndarray, cells: tuple[int, int]) -> dict:
    """Rank correlation on the cell grid and SSIM at full size, signed and absolute."""
    ref_grid, other_grid = pool(reference, cells), pool(other, cells)
    return {
        "spearman": spearman(ref_grid, other_grid),
        "spearman_abs": spearman(np.abs(ref_grid), np.abs(other_grid)),
        "ssim": ssim(reference, other),
        "ssim_abs": ssim(np.abs(reference), np.abs(other)),
    }


# ---------------------------------------------------------------- one image


def make_map(method, model, layer, x, target, seed, orderings):
    """(H x W map, info) of ``method`` on ``model``; info is {} for deterministic methods."""
    maker = make_method(method, model, layer, samples=orderings)
    return map_and_info(maker(x, target, seed))


def explain_image(model, x, target, seed, config, plan, cells, progress=None) -> dict:
    """The per-image record's results: per step the target's probability and, per layer
    and method, the four scores against the trained model's map."""
    layers, methods, orderings = config["layers"], config["methods"], config["orderings"]
    reference_seed, compare_seed = seed, seed + 1
    results = {layer: {m: {s: [] for s in SCORES} for m in methods} for layer in layers}
    shapcam_info = {layer: {m: [] for m in methods if m in SHAPCAM_METHODS} for layer in layers}
    probability, predicted = [], []
    references = {}
    for step, _stage, _modules, work in cascade(model, config["seed"], plan):
        with torch.inference_mode():
            logits = work(x)[0].double()
        probability.append(float(logits.softmax(0)[target]))
        predicted.append(int(logits.argmax()))
        for layer in layers:
            for method in methods:
                if step == 0:
                    references[layer, method] = make_map(
                        method, work, layer, x, target, reference_seed, orderings
                    )
                    results[layer][method]["reference_grid"] = _grid(
                        references[layer, method][0], cells[layer]
                    )
                    if method in SHAPCAM_METHODS:
                        shapcam_info[layer][method].append(
                            _noise(references[layer, method], cells[layer])
                        )
                saliency, info = make_map(method, work, layer, x, target, compare_seed, orderings)
                for key, value in compare(
                    references[layer, method][0], saliency, cells[layer]
                ).items():
                    results[layer][method][key].append(value)
                if method in SHAPCAM_METHODS:
                    shapcam_info[layer][method].append(_noise((saliency, info), cells[layer]))
        if progress is not None:
            progress.set_postfix_str(f"step {step}")
    for layer in layers:
        for method, entries in shapcam_info[layer].items():
            results[layer][method]["reference"] = entries[0]
            results[layer][method]["maps"] = entries[1:]
    return {"target_probability": probability, "predicted": predicted, "layers": results}


def _grid(saliency, cells) -> list:
    """The map pooled to the cell grid, to 5 significant digits (h lists of w floats)."""
    return [[float(f"{v:.5g}") for v in row] for row in pool(saliency, cells).tolist()]


def _noise(made, cells) -> dict:
    """What the sampler did for a Shap-CAM map, and the map's size on the cell grid."""
    saliency, info = made
    scale = float(np.abs(pool(saliency, cells)).max())
    return {
        "n_orderings": info.get("n_orderings"),
        "max_stderr": info.get("max_stderr"),
        "path": info.get("path"),
        "max_abs_cell": scale,
    }


# ---------------------------------------------------------------- records and summary


def read_records(path: Path, config: dict) -> dict:
    """{image_id: record} from the records file; refuses a file with another config."""
    done = {}
    if not path.exists():
        return done
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    if lines:
        first = json.loads(lines[0])
        if first.get("config") != config:
            raise ShapCAMError(
                f"{path} was written with another configuration:\n  {first.get('config')}\n"
                f"this run:\n  {config}\nuse another --out or the same options"
            )
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interrupted write
            continue
        done[record["image_id"]] = record
    return done


def summarize(records: list[dict], config: dict, plan, extra: dict) -> dict:
    """Medians and quartiles per layer, method, step and score over the images."""
    step_names = ["trained", *[name for name, _ in plan]]
    table = {}
    for layer in config["layers"]:
        table[layer] = {}
        for method in config["methods"]:
            rows = []
            for step, stage in enumerate(step_names):
                row = {"step": step, "stage": stage, "n_images": len(records)}
                for score in SCORES:
                    values = np.array(
                        [r["layers"][layer][method][score][step] for r in records], dtype=float
                    )
                    row[score] = _quantiles(values)
                if method in SHAPCAM_METHODS and records:
                    maps = [r["layers"][layer][method]["maps"][step] for r in records]
                    relative = np.array(
                        [
                            m["max_stderr"] / m["max_abs_cell"] if m["max_abs_cell"] > 0 else np.nan
                            for m in maps
                        ]
                    )
                    row["max_stderr_median"] = _median([m["max_stderr"] for m in maps])
                    row["max_stderr_over_max_abs_cell_median"] = _median(relative)
                rows.append(row)
            table[layer][method] = {
                "steps": rows,
                "between_images": between_images(
                    [r["layers"][layer][method]["reference_grid"] for r in records]
                ),
            }
    probability = np.array([r["target_probability"] for r in records], dtype=float)
    agree = np.array(
        [[p == r["predicted"][0] for p in r["predicted"]] for r in records], dtype=float
    )
    return {
        "title": "Model-parameter randomisation sanity check (Adebayo et al. 2018), cascading",
        "n_images": len(records),
        "complete": len(records) >= config["limit"],
        "steps": [
            {
                "step": step,
                "stage": name,
                "reinitialised_in_this_step": modules,
                "target_probability_median": _median(probability[:, step]) if records else None,
                "prediction_unchanged_share": float(agree[:, step].mean()) if records else None,
            }
            for step, (name, modules) in enumerate([("trained", []), *plan])
        ],
        "results": table,
        **extra,
    }


def between_images(grids: list, size: int = 224) -> dict:
    """A chance level: the same scores between the trained model's maps of consecutive
    images (1-2, 2-3, ...). SSIM is on the pooled grids upsampled bilinearly to size x size,
    an approximation of the maps."""
    scores = {score: [] for score in SCORES}
    for first, second in zip(grids[:-1], grids[1:], strict=True):
        a, b = np.array(first), np.array(second)
        big_a, big_b = upsample_grid(a, (size, size)), upsample_grid(b, (size, size))
        scores["spearman"].append(spearman(a, b))
        scores["spearman_abs"].append(spearman(np.abs(a), np.abs(b)))
        scores["ssim"].append(ssim(big_a, big_b))
        scores["ssim_abs"].append(ssim(np.abs(big_a), np.abs(big_b)))
    return {"n_pairs": max(len(grids) - 1, 0)} | {
        score: _quantiles(np.array(values, dtype=float)) for score, values in scores.items()
    }


def _none_if_nan(value):
    return None if isinstance(value, float) and np.isnan(value) else value


def _quantiles(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"median": None, "q25": None, "q75": None, "mean": None, "n_nan": int(len(values))}
    q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {
        "median": round(float(median), 4),
        "q25": round(float(q25), 4),
        "q75": round(float(q75), 4),
        "mean": round(float(finite.mean()), 4),
        "n_nan": int(len(values) - len(finite)),
    }


def _median(values) -> float | None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def notes(config: dict, plan, sample_ids: list[str]) -> dict:
    """What sanity.json must say besides the numbers."""
    return {
        "model": f"{config['model']} (ImageNet weights, offline), eval mode",
        "target": "the label class",
        "layers": config["layers"],
        "methods": {
            "shapcam": f"Shap-CAM, value prob, baseline zero, m = {config['orderings']} "
            "antithetic orderings per map (make_method('shapcam', samples=m))",
            "gradcam": "pytorch-grad-cam GradCAM, ClassifierOutputTarget(label) (the logit)",
            "gradcampp": "pytorch-grad-cam GradCAMPlusPlus, the logit",
            "layercam": "pytorch-grad-cam LayerCAM, the logit",
        },
        "randomisation": "cascading from the top (Adebayo et al. 2018, section 4): step k "
        "re-initialises stages 1..k; steps[k].reinitialised_in_this_step lists the modules "
        "of stage k; all other parameters and buffers keep their trained values",
        "init": INIT,
        "seeds": {
            "randomisation": f"torch.manual_seed({config['seed']} + 1) before each module",
            "shapcam_orderings": f"reference map on the trained model: image_seed({config['seed']},"
            " image_id) (runner.image_seed, crc32); every compared map (step 0 included): that"
            " seed + 1",
        },
        "scores": {
            "spearman": "Spearman rank correlation of the two maps average-pooled to the "
            "layer's h x w cell grid (7 x 7 at blocks.5 and blocks.6); NaN (not counted) when "
            "a map is constant",
            "spearman_abs": "the same on the absolute values of the pooled maps",
            "ssim": "skimage.metrics.structural_similarity of the two 224 x 224 maps, each "
            "min-max scaled to [0, 1], data_range=1, default 7 x 7 window",
            "ssim_abs": "the same on the absolute maps",
            "summary": "median, quartiles and mean over images per step; step 0 compares the "
            "trained model's map with itself recomputed (another seed for Shap-CAM)",
        },
        "orderings_caveat": f"m = {config['orderings']} orderings is few: each Shap-CAM map is a "
        "Monte Carlo estimate with the standard errors recorded (max_stderr, in probability "
        "units, and its ratio to the largest absolute cell of the map). The noise lowers "
        "Shap-CAM's correlation with anything, itself included; step 0 of shapcam (two maps "
        "of the TRAINED model with different seeds) is the ceiling its later steps are read "
        "against. Where the randomised model's target probability is flat, the map is mostly "
        "noise and its correlation near 0 is what randomisation should give.",
        "between_images": "results[layer][method].between_images: the same scores between "
        "the trained model's maps of consecutive images (a chance level for maps that share "
        "nothing but the method's typical layout); its SSIM is computed on the pooled grids "
        "upsampled bilinearly, an approximation",
        "grad_cam_note": "pytorch-grad-cam applies ReLU to its maps, so the signed and "
        "absolute scores coincide for gradcam, gradcampp and layercam",
        "images": {
            "dataset": "first N images of the ImageNet subset (ImageNetLOC order)",
            "count": len(sample_ids),
            "first": sample_ids[0] if sample_ids else None,
            "last": sample_ids[-1] if sample_ids else None,
            "ids": sample_ids,
        },
    }


# ---------------------------------------------------------------- Quantus cross-check


def quantus_check(model, preprocess, dataset, config, plan, out_dir, n_images, method="gradcam"):
    """Quantus 0.6's MPRT (top_down, seed = ours) with our map maker and our rank correlation
    on the cell grid, against this script's cascade, for ``method`` on the first images."""
    import quantus

    layer = config["layers"][0]
    samples = dataset.samples[:n_images]
    x_batch = torch.cat([preprocess(dataset.load(s)) for s in samples]).numpy()
    cells = tuple(spatial_layers(model, x_batch.shape[-1])[layer][1:])
    y_batch = np.array([s.label for s in samples])

    def explain(model, inputs, targets, **kwargs):
        maps = [
            make_map(method, model, layer, torch.from_numpy(inputs[i : i + 1]), int(t), 0, 1)[0]
            for i, t in enumerate(targets)
        ]
        # Quantus refuses a batch of all-zero maps (asserts.assert_attributions), which
        # Grad-CAM gives on some randomised models: such a map becomes the constant 2 + i,
        # which has no ranks either (Spearman NaN on both sides).
        maps = [m if np.any(m != 0) else np.full_like(m, 2.0 + i) for i, m in enumerate(maps)]
        return np.stack(maps)[:, None]  # float64, as ours: no rounding to break rank ties

    def grid_spearman(a, b, batched=True, **kwargs):
        side = x_batch.shape[-1]
        return np.array(
            [
                spearman(pool(u.reshape(side, side), cells), pool(v.reshape(side, side), cells))
                for u, v in zip(a, b, strict=True)
            ]
        )

    metric = quantus.MPRT(
        similarity_func=grid_spearman,
        layer_order="top_down",
        seed=config["seed"],
        normalise=False,  # division by the batch's max: no change in ranks, only rounding
        disable_warnings=True,
    )
    started = time.perf_counter()
    scores = metric(
        model=copy.deepcopy(model),
        x_batch=x_batch,
        y_batch=y_batch,
        a_batch=None,
        explain_func=explain,
        device="cpu",
        batch_size=len(samples),
    )
    quantus_seconds = time.perf_counter() - started
    ours = {s.image_id: [] for s in samples}
    for step, _stage, _modules, work in cascade(model, config["seed"], plan):
        for sample, x_np in zip(samples, x_batch, strict=True):
            x = torch.from_numpy(x_np[None])
            if step == 0:
                ours[sample.image_id].append(
                    make_map(method, work, layer, x, sample.label, 0, 1)[0]
                )
            else:
                saliency = make_map(method, work, layer, x, sample.label, 0, 1)[0]
                ours[sample.image_id].append(
                    compare(ours[sample.image_id][0], saliency, cells)["spearman_abs"]
                )
    records_file = out_dir / "records.jsonl"
    recorded = read_records(records_file, config) if records_file.exists() else {}
    rows, largest, largest_records, nan_mismatches = [], 0.0, None, 0
    for step, (stage, modules) in enumerate(plan, start=1):
        # Quantus resets one module per step, in reverse named_modules order: the stage is
        # complete after the last of its modules in that order.
        last = [name for name in scores if name in modules][-1]
        for i, sample in enumerate(samples):
            theirs = float(scores[last][i])
            mine = float(ours[sample.image_id][step])
            if np.isnan(theirs) != np.isnan(mine):
                nan_mismatches += 1
            elif not np.isnan(theirs):
                largest = max(largest, abs(theirs - mine))
            row = {
                "step": step,
                "stage": stage,
                "quantus_layer": last,
                "image_id": sample.image_id,
                "quantus": theirs,
                "ours": mine,
            }
            record = recorded.get(sample.image_id)
            if record is not None and method in record["layers"].get(layer, {}):
                kept = float(record["layers"][layer][method]["spearman_abs"][step])
                row["records_jsonl"] = kept
                if not np.isnan(kept) and not np.isnan(theirs):
                    largest_records = max(largest_records or 0.0, abs(theirs - kept))
            rows.append({key: _none_if_nan(value) for key, value in row.items()})
    report = {
        "what": f"quantus.MPRT(layer_order='top_down', seed={config['seed']}, abs=True, "
        "normalise=False, similarity_func = our Spearman on the cell grid) with "
        f"explain_func = make_method('{method}', model, '{layer}'), against this script's "
        "cascade and spearman_abs; Quantus re-initialises one module per step (99 for "
        "EfficientNet-Lite0), so its score after the last module of each of our stages is "
        "the one compared",
        "quantus_version": quantus.__version__,
        "method": method,
        "layer": layer,
        "images": [s.image_id for s in samples],
        "n_quantus_steps": len(scores) - 1,
        "max_abs_difference": largest,
        "max_abs_difference_to_records_jsonl": largest_records,
        "nan_in_both": sum(r["quantus"] is None and r["ours"] is None for r in rows),
        "nan_in_one_only": nan_mismatches,
        "all_zero_maps": "Quantus refuses a batch whose maps are all zero; Grad-CAM gives "
        "all-zero maps on some randomised models, so explain_func replaces such a map by a "
        "constant (no ranks, Spearman NaN as in ours)",
        "quantus_seconds": round(quantus_seconds, 1),
        "rows": rows,
    }
    (out_dir / "quantus_mprt.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


# ---------------------------------------------------------------- main


def versions() -> dict:
    """Versions of the packages the scores come from, beyond environment()'s."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("scipy", "scikit-image", "quantus"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=None,
        help="ImageNet LOC folder (default: $SHAPCAM_IMAGENET or ../shared/imagenet-val-subset)",
    )
    parser.add_argument("--limit", type=int, default=100, help="first N images (default 100)")
    parser.add_argument("--orderings", type=int, default=32, help="Shap-CAM orderings m")
    parser.add_argument("--layer", default="blocks.5", help="layer, or several comma-separated")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--seed", type=int, default=42, help="randomisation and ordering seed")
    parser.add_argument("--out", default="results/sanity", help="output folder")
    parser.add_argument(
        "--quantus-images",
        type=int,
        default=0,
        help="only run Quantus's MPRT cross-check (gradcam) on the first N images",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def run(args, model=None, preprocess=None) -> dict:
    """The whole run; returns the summary. ``model``/``preprocess`` override --model."""
    if model is None:
        model, preprocess = load_model(args.model)
    model.eval()
    dataset = ImageNetLOC(resolve_root(args.data), limit=args.limit)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = [name.strip() for name in args.layer.split(",") if name.strip()]
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    size = preprocess(dataset.load(dataset.samples[0])).shape[-1] if len(dataset) else 224
    shapes = spatial_layers(model, size)
    for layer in layers:
        if layer not in shapes:
            raise ShapCAMError(f"layer {layer!r} is not a spatial layer of the model")
    cells = {layer: tuple(shapes[layer][1:]) for layer in layers}
    plan = stages(model)
    config = {
        "model": args.model,
        "layers": layers,
        "methods": methods,
        "orderings": args.orderings,
        "value": "prob",
        "baseline": "zero",
        "target": "label",
        "seed": args.seed,
        "stages": [name for name, _ in plan],
        "init": "reset_parameters, torch.manual_seed(seed + 1) per module",
    }
    if args.quantus_images:
        return quantus_check(model, preprocess, dataset, config, plan, out_dir, args.quantus_images)
    records_file = out_dir / "records.jsonl"
    done = read_records(records_file, config)
    command = " ".join(["python", "scripts/sanity_checks.py", *map(shlex.quote, sys.argv[1:])])
    extra = {"command": command, "environment": environment(), "versions": versions()}
    todo = [s for s in dataset.samples if s.image_id not in done]
    if records_file.exists() and _last_byte(records_file) not in (b"", b"\n"):
        with open(records_file, "a") as handle:  # end a line cut by an interrupted write
            handle.write("\n")
    with open(records_file, "a") as handle:
        if not done and records_file.stat().st_size == 0:
            handle.write(json.dumps({"config": config}) + "\n")
            handle.flush()
        bar = tqdm(
            todo,
            desc="images",
            file=sys.stderr,
            disable=args.no_progress,
            initial=len(dataset) - len(todo),
            total=len(dataset),
        )
        for sample in bar:
            try:
                x = preprocess(dataset.load(sample))
            except ShapCAMError as error:
                tqdm.write(f"skipped {sample.image_id}: {error}", file=sys.stderr)
                continue
            started = time.perf_counter()
            record = {
                "image_id": sample.image_id,
                "label": sample.label,
                **explain_image(
                    model,
                    x,
                    sample.label,
                    image_seed(args.seed, sample.image_id),
                    config,
                    plan,
                    cells,
                    bar,
                ),
                "seconds": round(time.perf_counter() - started, 2),
            }
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            done[sample.image_id] = record
            write_summary(out_dir, done, dataset, config, plan, args, extra)
    return write_summary(out_dir, done, dataset, config, plan, args, extra)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return b""
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def write_summary(out_dir, done, dataset, config, plan, args, extra) -> dict:
    order = [s.image_id for s in dataset.samples if s.image_id in done]
    records = [done[i] for i in order]
    seconds = [r["seconds"] for r in records]
    extra = {
        **extra,
        "seconds_per_image_median": _median(seconds) if seconds else None,
        "torch_threads": torch.get_num_threads(),
        "note": notes({**config, "limit": args.limit}, plan, order),
    }
    quantus_file = out_dir / "quantus_mprt.json"
    if quantus_file.exists():
        report = json.loads(quantus_file.read_text())
        extra["quantus_mprt"] = {k: v for k, v in report.items() if k != "rows"}
    summary = summarize(records, {**config, "limit": args.limit}, plan, extra)
    temporary = out_dir / "sanity.json.tmp"
    temporary.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(temporary, out_dir / "sanity.json")
    return summary


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except ShapCAMError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
