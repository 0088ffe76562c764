"""Run the methods over a dataset: the settings, the per-image loop, resume and shards.

The records, their lock and the checks of ``--out`` are in ``records``; the summary in
``summary``.
"""

import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..cam import spatial_layers
from ..errors import ShapCAMError
from ..models import DEFAULT_LAYER
from . import distributed, metrics
from .data import ImageNetLOC
from .methods import make_method, map_and_info, parse_methods
from .records import (
    OutputLock,
    RecordWriter,
    check_output,
    merge_records,
    read_records,
    records_path,
    shard_path,
    shard_paths,
)
from .summary import summarize, write_summary

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


def image_seed(seed: int, image_id: str) -> int:
    """A per-image seed: the same in every process and on every rerun."""
    return zlib.crc32(f"{seed}:{image_id}".encode()) & 0x7FFFFFFF


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

    Rank 0 locks ``out`` for the whole run: another run on it is refused. Under torchrun
    (or any initialized process group) the images still to do, those skipped before
    included, are dealt round-robin to the processes; rank 0 merges the records and writes
    the summary. ShapCAMError when no image could be read. On stderr: the rows of the CSV
    left out, the images skipped, the estimated time of a run longer than a minute, and
    (with ``progress``) a progress bar.
    """
    rank, world = distributed.rank_and_world()
    out = check_output(out)
    device = distributed.local_device(torch.device(device))
    fingerprint = dataset.fingerprint()
    lock = OutputLock(out)
    try:
        _take_output(out, lock, fresh, rank)
        done, skipped, unknown = read_records(out, config, fingerprint)
        if rank == 0:
            _report_data(dataset, unknown)
        distributed.barrier()  # everyone has read the files before anyone writes
        remaining = [
            sample
            for sample in dataset.samples
            if any((sample.image_id, name) not in done for name in config.methods)
        ]
        mine = remaining[rank::world]
        path = records_path(out) if world == 1 else shard_path(out, rank)
        writer = RecordWriter(path, config, fingerprint)
        try:
            _run_images(model, preprocess, dataset, config, device, mine, done, writer, progress)
        finally:
            writer.close()
        distributed.barrier()
        summary = None
        if rank == 0:
            merged, skipped = merge_records(out, dataset, config, fingerprint)
            summary = summarize(merged, skipped, dataset, config, device=device, command=command)
            if summary["n_images"]:
                write_summary(out, summary)
        distributed.barrier()
    finally:
        lock.release()
    if summary is not None and not summary["n_images"]:
        reasons = [record["skipped"] for record in skipped.values()]
        raise ShapCAMError(
            f"no image could be read: all {len(dataset)} were skipped"
            + (f" ({reasons[0]}, ...)" if reasons else "")
            + f"; the images are read from {str(dataset.image_dir)!r}"
        )
    return summary


def _take_output(out: Path, lock: OutputLock, fresh: bool, rank: int) -> None:
    """Rank 0 locks ``out`` (and, with ``fresh``, removes its records); every process
    learns of a refusal."""
    refusal = None
    if rank == 0:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            if fresh:
                for path in [records_path(out), *shard_paths(out)]:
                    path.unlink(missing_ok=True)
        except ShapCAMError as error:
            refusal = error
    message = distributed.from_rank0(None if refusal is None else str(refusal))
    if message is not None:
        raise refusal or ShapCAMError(message)


def _report_data(dataset: ImageNetLOC, unknown: list[Path]) -> None:
    for image_id, reason in [*dataset.invalid, *dataset.duplicates]:
        print(f"skipped row: {reason} ({image_id})", file=sys.stderr)
    if unknown:
        print(
            f"warning: {unknown[0].name} does not say which data its records were made "
            f"from (an older version wrote it); taken as made from {str(dataset.root)!r}, "
            "and recorded so",
            file=sys.stderr,
        )


def _run_images(model, preprocess, dataset, config, device, samples, done, writer, progress):
    """The records of ``samples`` (the methods not in ``done``), with progress on stderr."""
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
    rank, world = distributed.rank_and_world()
    bar = tqdm(
        samples,
        desc="evaluate",
        unit="image",
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        disable=not progress or rank != 0,
    )
    estimated = rank != 0
    try:
        for sample in bar:
            started = time.perf_counter()
            read = _evaluate_image(
                model, preprocess, dataset, sample, config, makers, cells, done, writer, device
            )
            if read and not estimated:
                estimated = True
                _say_estimate(time.perf_counter() - started, len(samples), world)
    finally:
        bar.close()


def _say_estimate(seconds: float, n_images: int, world: int) -> None:
    """The estimated time of this process's ``n_images``, when longer than a minute."""
    from ..cli import LONG_RUN, _duration

    if seconds * n_images > LONG_RUN:
        each = f" in each of {world} processes" if world > 1 else ""
        tqdm.write(
            f"shapcam: about {_duration(seconds * n_images)} for {n_images:,} images{each} at "
            f"{seconds:.1f} s per image (Ctrl-C stops; the same command resumes)",
            file=sys.stderr,
        )


def _evaluate_image(
    model, preprocess, dataset, sample, config, makers, cells, done, writer, device
) -> bool:
    """Write the records of one image (or its skip record); False when it was skipped."""
    try:
        image = dataset.load(sample)
        x = preprocess(image).to(device)
    except ShapCAMError as error:
        tqdm.write(f"skipped {sample.image_id}: {error}", file=sys.stderr)
        writer.write({"image_id": sample.image_id, "skipped": str(error)})
        return False
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
        raw, info = map_and_info(raw)
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
    return True


def grid_of(raw_map: np.ndarray, cells: tuple[int, int]) -> list:
    """The raw map averaged over each cell of the layer's h x w grid, to 5 significant
    digits (h lists of w floats): what the rank correlations between methods compare."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(
        torch.as_tensor(np.asarray(raw_map, dtype=np.float64))[None, None], cells
    )[0, 0]
    return [[float(f"{v:.5g}") for v in row] for row in pooled.tolist()]
