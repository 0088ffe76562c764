"""Galleries of an evaluation run: a method's best, typical and worst images, redrawn.

Cases are chosen from the records by the per-image insertion AUC minus deletion AUC
(high when the map orders pixels the way the network needs them). Their maps are
recomputed from the images with the run's settings and per-image seeds and checked
against the records. ``save_galleries`` writes one small JPEG per method into
``<run folder>/gallery/``, so that a book built without the images still shows them.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from ..errors import ShapCAMError
from ..models import imagenet_classes, load_model
from . import metrics
from .data import ImageNetLOC
from .methods import DISPLAY_NAMES, make_method, map_and_info
from .runner import image_seed

KINDS = ("best", "typical", "worst")
#: the colour map of [0, 1] maps in the book
SEQUENTIAL = "viridis"


@dataclass
class Case:
    """One recomputed map of a gallery."""

    kind: str  # "best", "typical" or "worst"
    image_id: str
    picture: Image.Image
    saliency: np.ndarray  # (H, W) in [0, 1], on the model input's grid
    boxes: tuple
    target: int
    score: float  # insertion AUC minus deletion AUC, from the record
    energy: float  # energy pointing game of the recomputed map
    recorded_energy: float  # ... and of the record
    box_fraction: float  # fraction of the map inside the boxes

    @property
    def matches(self) -> bool:
        """Whether the recomputed map scores as its record (to 1e-3)."""
        return abs(self.energy - self.recorded_energy) < 1e-3


def load_run(folder: str | Path) -> tuple[dict, dict]:
    """(summary, {(image_id, method): record}) of the ``shapcam evaluate`` run in ``folder``."""
    folder = Path(folder)
    summary = json.loads((folder / "results.json").read_text())
    records = {}
    with open(folder / summary.get("records", "results.records.jsonl")) as handle:
        for line in handle:
            record = json.loads(line)
            if "method" in record:
                records[(record["image_id"], record["method"])] = record
    return summary, records


def pick_cases(records: dict, method: str, k: int = 2) -> dict[str, list[str]]:
    """{kind: k image ids}: the k best, the k around the median and the k worst images of
    ``method`` by insertion minus deletion (ties broken by image id)."""
    images = sorted(image for image, m in records if m == method)
    ranked = sorted(images, key=lambda image: (-_score(records[(image, method)]), image))
    middle = len(ranked) // 2 - k // 2
    return {"best": ranked[:k], "typical": ranked[middle : middle + k], "worst": ranked[-k:]}


def recompute_cases(
    summary: dict, records: dict, method: str, dataset: ImageNetLOC, k: int = 2
) -> list[Case]:
    """The maps of ``pick_cases``, recomputed on CPU with the run's settings and seeds."""
    settings = summary["settings"]
    model, preprocess = load_model(summary["model"])
    maker = make_method(
        method,
        model,
        summary["layer"],
        samples=settings["samples"],
        value=settings["value"],
        baseline=settings["baseline"],
        block_size=settings.get("block_size", 1),
        device="cpu",
    )
    samples = {sample.image_id: sample for sample in dataset.samples}
    cases = []
    for kind, chosen in pick_cases(records, method, k).items():
        for image_id in chosen:
            sample, record = samples[image_id], records[(image_id, method)]
            picture = dataset.load(sample)
            seed = image_seed(settings["seed"], image_id)
            made = maker(preprocess(picture), record["target"], seed)
            saliency = metrics.scale_map(map_and_info(made)[0])
            mask = metrics.box_mask(sample.boxes, picture.size, saliency.shape)
            cases.append(
                Case(
                    kind=kind,
                    image_id=image_id,
                    picture=picture,
                    saliency=saliency,
                    boxes=sample.boxes,
                    target=record["target"],
                    score=_score(record),
                    energy=metrics.energy_pointing_game(saliency, mask),
                    recorded_energy=record["energy_pointing_game"],
                    box_fraction=float(mask.mean()),
                )
            )
    return cases


def draw_gallery(cases: list[Case], title: str) -> plt.Figure:
    """A 2 x 3 figure (rows: the k cases, columns: best, typical, worst) of overlays in
    the sequential colour map on [0, 1], with the boxes in white and one colour bar."""
    classes = imagenet_classes()
    rows = max(sum(case.kind == kind for case in cases) for kind in KINDS)
    fig, axes = plt.subplots(rows, 3, figsize=(10, 3.6 * rows + 0.6), squeeze=False)
    shown = None
    for column, kind in enumerate(KINDS):
        for row, case in enumerate(c for c in cases if c.kind == kind):
            ax = axes[row, column]
            width, height = case.picture.size
            ax.imshow(case.picture)
            extent = (0, width, height, 0)
            shown = ax.imshow(
                case.saliency, cmap=SEQUENTIAL, vmin=0, vmax=1, alpha=0.5, extent=extent
            )
            for x1, y1, x2, y2 in case.boxes:
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", lw=1.5))
            ax.set_title(
                f"{kind}: {classes[case.target][:22]}\nins − del {case.score:+.2f}, "
                f"EPG {case.energy:.2f}, box {case.box_fraction:.0%}",
                fontsize=10,
            )
            ax.set_axis_off()
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, shrink=0.6, pad=0.02)
        bar.set_label("map, scaled to [0, 1]", fontsize=10)
    return fig


def save_galleries(
    folder: str | Path, root=None, methods=("shapcam", "gradcam"), k: int = 2
) -> list[Path]:
    """Recompute and draw the galleries of the run in ``folder`` from the ImageNet folder
    ``root`` (see ``resolve_root``); write ``folder/gallery/<method>.jpg`` (100 dpi).
    Refuses (ShapCAMError) when a recomputed map does not score as its record."""
    folder = Path(folder)
    summary, records = load_run(folder)
    dataset = ImageNetLOC(root)
    written = []
    for method in (m for m in methods if m in summary["methods"]):
        cases = recompute_cases(summary, records, method, dataset, k)
        mismatched = [case.image_id for case in cases if not case.matches]
        if mismatched:
            raise ShapCAMError(
                f"the recomputed {method} maps of {', '.join(mismatched)} do not score as "
                f"their records in {folder}: other data, model or code than the run's?"
            )
        fig = draw_gallery(cases, gallery_title(summary, method))
        path = folder / "gallery" / f"{method}.jpg"
        path.parent.mkdir(exist_ok=True)
        fig.savefig(path, dpi=100, pil_kwargs={"quality": 80})
        plt.close(fig)
        written.append(path)
    return written


def gallery_title(summary: dict, method: str) -> str:
    """E.g. 'Shap-CAM (prob) at blocks.6: best, typical and worst images'."""
    return f"{DISPLAY_NAMES[method]} at {summary['layer']}: best, typical and worst images"


def _score(record: dict) -> float:
    return record["insertion_auc"] - record["deletion_auc"]
