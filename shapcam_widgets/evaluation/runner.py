"""Run the methods over a dataset, record per-image results, resume, merge, summarize.

Files, for ``--out results.json``:

- ``results.records.jsonl``: one JSON object per line. The first line is
  ``{"config": {...}}`` (what the records depend on); then one record per (image,
  method), or ``{"image_id": ..., "skipped": reason}`` for an image that could not be
  read. Records are appended and flushed one at a time, so an interrupted run resumes
  where it stopped; a run whose configuration differs from the file's is refused.
- ``results.records.rank<r>.jsonl``: the same, written by process r of a multi-process
  run (torchrun); merged into ``results.records.jsonl`` (in CSV order) and removed at the
  end of the run, or by the next run of any size.
- ``results.json``: the summary (means, bootstrap 95 % intervals, timing, environment);
  ``results.csv``: one row per method.
"""

import csv
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cam import spatial_layers
from ..errors import ShapCAMError
from ..models import DEFAULT_LAYER
from . import distributed, metrics
from .data import ImageNetLOC
from .methods import make_method, parse_methods

#: The per-image metrics, with the summary key each one is averaged into.
METRICS = (
    "avg_drop",
    "avg_increase",
    "deletion_auc",
    "insertion_auc",
    "energy_pointing_game",
    "pointing_game",
)
TARGETS = ("label", "predicted")


@dataclass(frozen=True)
class EvaluationConfig:
    """What the per-image records depend on (plus bootstrap and batch settings)."""

    model: str = "efficientnet_lite0"
    layer: str = DEFAULT_LAYER
    methods: tuple[str, ...] = ("shapcam", "gradcam", "gradcampp", "layercam", "center", "random")
    samples: int = 128
    value: str = "prob"
    baseline: str = "zero"
    block_size: int = 1
    tol: float | None = None
    target: str = "label"
    seed: int = 0
    step: int | None = None
    bootstrap: int = 1000
    scorecam_batch_size: int = 64
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(parse_methods(list(self.methods))))
        if self.target not in TARGETS:
            raise ShapCAMError(f"unknown target {self.target!r}; valid: {', '.join(TARGETS)}")
        if self.samples < 1:
            raise ShapCAMError(f"samples must be >= 1; got {self.samples}")
        if self.block_size < 1:
            raise ShapCAMError(f"block_size must be >= 1; got {self.block_size}")
        if self.tol is not None and not self.tol > 0:
            raise ShapCAMError(f"tol must be > 0; got {self.tol}")
        if self.step is not None and self.step < 1:
            raise ShapCAMError(f"step must be >= 1 pixel; got {self.step}")

    def key(self) -> dict:
        """The settings a record depends on; resumed records must agree on them."""
        return {
            "model": self.model,
            "layer": self.layer,
            "samples": self.samples,
            "value": self.value,
            "baseline": self.baseline,
            "target": self.target,
            "seed": self.seed,
            "step": self.step,
            # only when set, so that records made before these options existed resume
            **({"block_size": self.block_size} if self.block_size != 1 else {}),
            **({"tol": self.tol} if self.tol is not None else {}),
            **self.extra,
        }


def records_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.records.jsonl")


def shard_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.records.rank{rank}.jsonl")


def _shard_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.records.rank*.jsonl"))


def image_seed(seed: int, image_id: str) -> int:
    """A per-image seed: the same in every process and on every rerun."""
    return zlib.crc32(f"{seed}:{image_id}".encode()) & 0x7FFFFFFF


def read_records(out: Path, config: EvaluationConfig) -> tuple[dict, dict]:
    """({(image_id, method): record}, {image_id: skip record}) from all record files."""
    done, skipped = {}, {}
    for path in [records_path(out), *_shard_paths(out)]:
        if not path.exists():
            continue
        with open(path) as handle:
            for number, line in enumerate(handle):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut short by an interruption: the next run redoes it
                    continue
                if "config" in record:
                    if record["config"] != config.key():
                        raise ShapCAMError(
                            f"{path} holds records made with {record['config']}, not "
                            f"{config.key()}: pass --fresh to start over, or another --out"
                        )
                elif "skipped" in record:
                    skipped[record["image_id"]] = record
                elif number == 0:
                    raise ShapCAMError(f"{path} does not start with a config line")
                else:
                    done[(record["image_id"], record["method"])] = record
    return done, skipped


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


class _RecordWriter:
    def __init__(self, path: Path, config: EvaluationConfig):
        fresh = not path.exists() or path.stat().st_size == 0
        cut = not fresh and _last_byte(path) != b"\n"
        self.handle = open(path, "a")
        if fresh:
            self.write({"config": config.key()})
        elif cut:  # an interrupted write: end that line, so that it stays the only bad one
            self.handle.write("\n")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def score_map(model, x, raw_map, target, mask, step) -> dict:
    """All metrics of one (raw) map for one image; the map is scaled with scale_map."""
    saliency = metrics.scale_map(raw_map)
    y, o = metrics.confidence_change(model, x, saliency, target)
    del_x, del_y = metrics.deletion_curve(model, x, saliency, target, step)
    ins_x, ins_y = metrics.insertion_curve(model, x, saliency, target, step)
    return {
        "y": y,
        "o": o,
        "avg_drop": metrics.average_drop(y, o),
        "avg_increase": metrics.increase(y, o),
        "deletion_auc": metrics.auc(del_x, del_y),
        "insertion_auc": metrics.auc(ins_x, ins_y),
        "energy_pointing_game": metrics.energy_pointing_game(saliency, mask),
        "pointing_game": metrics.pointing_game(saliency, mask),
        "degenerate_map": bool(saliency.max() <= 0),
        # the curves (probability after each step) for plots, to 4 decimals
        "deletion_curve": np.round(del_y, 4).tolist(),
        "insertion_curve": np.round(ins_y, 4).tolist(),
    }


def evaluate(
    model: torch.nn.Module,
    preprocess,
    dataset: ImageNetLOC,
    config: EvaluationConfig,
    out: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    fresh: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict | None:
    """Evaluate ``config.methods`` on ``dataset``; returns the summary (on rank 0).

    Under torchrun (or any initialized process group) the images still to do are dealt
    round-robin to the processes; rank 0 merges the records and writes the summary.
    """
    rank, world = distributed.rank_and_world()
    out = Path(out)
    device = distributed.local_device(torch.device(device))
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            for path in [records_path(out), *_shard_paths(out)]:
                path.unlink(missing_ok=True)
    distributed.barrier()
    done, skipped = read_records(out, config)
    distributed.barrier()  # everyone has read the files before anyone writes

    model = model.to(device).eval()
    input_size = int(getattr(preprocess, "size", 224))
    makers = {
        name: make_method(
            name,
            model,
            config.layer,
            samples=config.samples,
            value=config.value,
            baseline=config.baseline,
            block_size=config.block_size,
            tol=config.tol,
            device=device,
            scorecam_batch_size=config.scorecam_batch_size,
            input_size=input_size,
        )
        for name in config.methods
    }
    cells = spatial_layers(model, input_size)[config.layer][1:]
    remaining = [
        sample
        for sample in dataset.samples
        if sample.image_id not in skipped
        and any((sample.image_id, name) not in done for name in config.methods)
    ]
    mine = remaining[rank::world]
    writer = _RecordWriter(records_path(out) if world == 1 else shard_path(out, rank), config)
    bar = tqdm(mine, desc="evaluate", unit="image", disable=not progress or rank != 0)
    try:
        for sample in bar:
            _evaluate_image(
                model, preprocess, dataset, sample, config, makers, cells, done, writer, device
            )
    finally:
        writer.close()
        bar.close()
    distributed.barrier()
    summary = None
    if rank == 0:
        merged, skipped = merge_records(out, dataset, config)
        summary = summarize(merged, skipped, dataset, config, device=device, command=command)
        write_summary(out, summary)
    distributed.barrier()
    return summary


def _evaluate_image(
    model, preprocess, dataset, sample, config, makers, cells, done, writer, device
):
    try:
        image = dataset.load(sample)
        x = preprocess(image).to(device)
    except ShapCAMError as error:
        tqdm.write(f"skipped {sample.image_id}: {error}", file=sys.stderr)
        writer.write({"image_id": sample.image_id, "skipped": str(error)})
        return
    with torch.inference_mode():
        predicted = int(model(x)[0].argmax())
    target = sample.label if config.target == "label" else predicted
    mask = metrics.box_mask(sample.boxes, image.size, tuple(x.shape[-2:]))
    seed = image_seed(config.seed, sample.image_id)
    for name, maker in makers.items():
        if (sample.image_id, name) in done:
            continue
        started = time.perf_counter()
        raw = maker(x, target, seed)
        seconds = time.perf_counter() - started
        raw, info = raw if isinstance(raw, tuple) else (raw, {})
        record = {
            "image_id": sample.image_id,
            "method": name,
            "label": sample.label,
            "predicted": predicted,
            "target": target,
            "seconds": seconds,
            **info,
            **score_map(model, x, raw, target, mask, config.step),
            "grid": grid_of(raw, cells),
        }
        writer.write(record)


def grid_of(raw_map: np.ndarray, cells: tuple[int, int]) -> list:
    """The raw map averaged over each cell of the layer's h x w grid, to 5 significant
    digits (h lists of w floats): what the rank correlations between methods compare."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(
        torch.as_tensor(np.asarray(raw_map, dtype=np.float64))[None, None], cells
    )[0, 0]
    return [[float(f"{v:.5g}") for v in row] for row in pooled.tolist()]


def merge_records(out: Path, dataset: ImageNetLOC, config: EvaluationConfig):
    """Fold the shard files into the main records file (CSV order first); remove them."""
    done, skipped = read_records(out, config)
    order = {sample.image_id: i for i, sample in enumerate(dataset.samples)}
    methods_order = {}
    for _image_id, method in done:
        methods_order.setdefault(method, len(methods_order))
    lines = [{"config": config.key()}]
    lines += sorted(skipped.values(), key=lambda r: order.get(r["image_id"], len(order)))
    lines += [
        done[key]
        for key in sorted(
            done, key=lambda k: (order.get(k[0], len(order)), k[0], methods_order[k[1]])
        )
    ]
    path = records_path(out)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    os.replace(temporary, path)
    for shard in _shard_paths(out):
        shard.unlink()
    return done, skipped


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
