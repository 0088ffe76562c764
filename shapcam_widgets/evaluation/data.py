"""Reader for the ImageNet localization (LOC) layout: images, labels and boxes.

The layout is the one of the ImageNet localization challenge files::

    DIR/LOC_val_solution.csv      ImageId,PredictionString ("synset x1 y1 x2 y2" per box)
    DIR/LOC_synset_mapping.txt    the 1,000 synsets in class-index order, with their words
    DIR/val/<ImageId>.JPEG        (or DIR/ILSVRC/Data/CLS-LOC/val/, the Kaggle layout)

Boxes are in the pixel coordinates of the image file as it is stored (227 x 227 for the
shared subset, the original sizes for the full validation set). The class of an image is
the line number (from 0) of its synset in the mapping file; an image whose boxes name
several synsets takes the first (the official validation files have one per image).
"""

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import ShapCAMError

ENV_VAR = "SHAPCAM_IMAGENET"
#: The shared subset: ``shared/imagenet-val-subset`` beside this checkout.
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "imagenet-val-subset"
SOLUTION = "LOC_val_solution.csv"
MAPPING = "LOC_synset_mapping.txt"
IMAGE_DIRS = (Path("val"), Path("ILSVRC") / "Data" / "CLS-LOC" / "val")
EXTENSIONS = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")


@dataclass(frozen=True)
class Sample:
    """One validation image: id, file, class index, synset and boxes (x1, y1, x2, y2)."""

    image_id: str
    path: Path
    label: int
    synset: str
    boxes: tuple[tuple[float, float, float, float], ...]


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else $SHAPCAM_IMAGENET, else the shared subset
    (``../shared/imagenet-val-subset`` from the repository root)."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_ROOT


class ImageNetLOC:
    """The samples of an ImageNet LOC folder, in the order of ``LOC_val_solution.csv``.

    limit: keep the first ``limit`` rows of the CSV (all when None).
    ``invalid`` lists (image_id, reason) for CSV rows that could not be parsed, and
    ``duplicates`` (image_id, reason) for later rows of an ImageId already read (dropped);
    each reason names the CSV line. Neither is in ``samples``. Images that are missing or
    cannot be decoded are found by ``load`` (which raises ShapCAMError), so that the runner
    can report and skip them. A folder without an image folder, or without the image of
    any valid row, is refused.
    """

    def __init__(self, root: str | os.PathLike | None = None, limit: int | None = None):
        self.root = resolve_root(root)
        if limit is not None and limit < 1:
            raise ShapCAMError(f"limit must be >= 1; got {limit}")
        if not self.root.is_dir():
            raise ShapCAMError(
                f"ImageNet folder {str(self.root)!r} does not exist: pass --data DIR or set "
                f"${ENV_VAR} to a folder holding {SOLUTION}, {MAPPING} and val/"
            )
        for name in (SOLUTION, MAPPING):
            if not (self.root / name).is_file():
                raise ShapCAMError(f"{str(self.root)!r} has no {name}")
        self.synsets, self.words = _read_mapping(self.root / MAPPING)
        self.image_dir = next((self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir()), None)
        if self.image_dir is None:
            raise ShapCAMError(
                f"{str(self.root)!r} has no image folder: looked for "
                f"{' and '.join(f'{d}/' for d in IMAGE_DIRS)} (the Kaggle layout)"
            )
        self._files = set(os.listdir(self.image_dir))
        index = {synset: i for i, synset in enumerate(self.synsets)}
        self.samples: list[Sample] = []
        self.invalid: list[tuple[str, str]] = []
        self.duplicates: list[tuple[str, str]] = []
        first_line: dict[str, int] = {}
        for line, row in _rows(self.root / SOLUTION):
            if limit is not None and len(self.samples) + len(self.invalid) >= limit:
                break
            image_id = row[0].strip()
            if image_id in first_line:
                self.duplicates.append(
                    (
                        image_id,
                        f"{SOLUTION} line {line}: the ImageId of line {first_line[image_id]} again",
                    )
                )
                continue
            first_line[image_id] = line
            try:
                self.samples.append(self._sample(image_id, row, index))
            except ValueError as error:
                self.invalid.append((image_id, f"{SOLUTION} line {line}: {error}"))
        if not any(sample.path.name in self._files for sample in self.samples):
            raise ShapCAMError(
                f"no image of the {len(self.samples)} valid rows of {SOLUTION} is in "
                f"{str(self.image_dir)!r} (looked for <ImageId> with {', '.join(EXTENSIONS)})"
            )

    def fingerprint(self) -> dict:
        """What records made from this folder depend on, whatever ``limit``: the sha256 of
        the CSV, of the mapping file and of the image paths its rows resolve to."""
        paths = "\n".join(
            str(self._path(row[0].strip()).relative_to(self.root))
            for _, row in _rows(self.root / SOLUTION)
        )
        return {
            "csv": _sha256((self.root / SOLUTION).read_bytes()),
            "mapping": _sha256((self.root / MAPPING).read_bytes()),
            "images": _sha256(paths.encode()),
        }

    def _sample(self, image_id: str, row: list[str], index: dict) -> Sample:
        if not image_id:
            raise ValueError("no ImageId")
        tokens = row[1].split() if len(row) > 1 else []
        if not tokens or len(tokens) % 5:
            raise ValueError("PredictionString is not a list of 'synset x1 y1 x2 y2'")
        boxes, synsets = [], []
        for k in range(0, len(tokens), 5):
            synset, *coords = tokens[k : k + 5]
            x1, y1, x2, y2 = (float(c) for c in coords)
            if synset not in index:
                raise ValueError(f"synset {synset} is not in {MAPPING}")
            if x2 < x1 or y2 < y1:
                raise ValueError(f"box {coords} has x2 < x1 or y2 < y1")
            synsets.append(synset)
            boxes.append((x1, y1, x2, y2))
        return Sample(
            image_id=image_id,
            path=self._path(image_id),
            label=index[synsets[0]],
            synset=synsets[0],
            boxes=tuple(boxes),
        )

    def _path(self, image_id: str) -> Path:
        for extension in EXTENSIONS:
            if f"{image_id}{extension}" in self._files:
                return self.image_dir / f"{image_id}{extension}"
        return self.image_dir / f"{image_id}.JPEG"

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    @staticmethod
    def load(sample: Sample) -> Image.Image:
        """The RGB image of ``sample``; ShapCAMError when it is missing or corrupt."""
        if not sample.path.is_file():
            raise ShapCAMError(f"image {sample.image_id}: file {str(sample.path)!r} is missing")
        try:
            with Image.open(sample.path) as image:
                image.load()
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            raise ShapCAMError(f"image {sample.image_id}: cannot decode: {error}") from error


def _rows(path: Path):
    """(line number, row) for the non-empty rows after the header of the solution CSV."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise ShapCAMError(f"{SOLUTION} must start with the header ImageId,PredictionString")
        for row in reader:
            if row:
                yield reader.line_num, row


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_mapping(path: Path) -> tuple[list[str], list[str]]:
    synsets, words = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            synset, _, rest = line.strip().partition(" ")
            synsets.append(synset)
            words.append(rest.strip())
    if len(set(synsets)) != len(synsets):
        raise ShapCAMError(f"{MAPPING} lists a synset twice")
    return synsets, words
