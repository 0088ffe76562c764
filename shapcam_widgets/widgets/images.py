"""The explorer's image catalogue: demo photos, the ImageNet subset, uploads.

Images are kept as loaders (called on first use), so that a catalogue of a thousand
ImageNet files costs nothing until one is chosen.
"""

import io
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..errors import ShapCAMError
from ..models import imagenet_classes, load_image

#: scikit-image photos that ship inside its wheel (others download on demand).
SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left")

#: Where the ImageNet subset lives by default, relative to the project root.
IMAGENET_ENV = "SHAPCAM_IMAGENET"
IMAGENET_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "imagenet-val-subset"

Loader = Callable[[], Image.Image]


def demo_images() -> dict[str, Loader]:
    """name -> loader for the photos that ship with scikit-image and matplotlib."""
    catalogue: dict[str, Loader] = {}
    for name in SKIMAGE_PHOTOS:
        catalogue[name] = _skimage_loader(name)
    catalogue["grace_hopper"] = _grace_hopper
    return catalogue


def _skimage_loader(name: str) -> Loader:
    def load() -> Image.Image:
        from skimage import data

        return load_image(getattr(data, name)())

    return load


def _grace_hopper() -> Image.Image:
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg") as handle:
        return load_image(Image.open(handle))


def imagenet_root(root: str | os.PathLike | None = None) -> Path | None:
    """The ImageNet subset folder: ``root``, else $SHAPCAM_IMAGENET, else ../shared/...

    None when the folder (with its val/ images) is not there.
    """
    candidate = root or os.environ.get(IMAGENET_ENV) or IMAGENET_DEFAULT
    path = Path(candidate).expanduser()
    return path if (path / "val").is_dir() else None


def imagenet_images(root: str | os.PathLike | None = None) -> dict[str, Loader]:
    """name -> loader for the ImageNet subset, each name carrying the true class."""
    path = imagenet_root(root)
    if path is None:
        return {}
    labels = _imagenet_labels(path)
    names = imagenet_classes()
    catalogue: dict[str, Loader] = {}
    for file in sorted((path / "val").glob("*.JPEG")):
        label = labels.get(file.stem)
        suffix = f" ({names[label]})" if label is not None else ""
        catalogue[f"imagenet/{file.stem[-8:]}{suffix}"] = _file_loader(file)
    return catalogue


def _imagenet_labels(path: Path) -> dict[str, int]:
    """image id -> class index, from LOC_val_solution.csv and LOC_synset_mapping.txt."""
    try:
        synsets = (path / "LOC_synset_mapping.txt").read_text().splitlines()
        index = {line.split()[0]: i for i, line in enumerate(synsets) if line.strip()}
        rows = (path / "LOC_val_solution.csv").read_text().splitlines()[1:]
    except OSError:
        return {}
    labels = {}
    for row in rows:
        image_id, _, boxes = row.partition(",")
        synset = boxes.split()[0] if boxes.split() else None
        if synset in index:
            labels[image_id] = index[synset]
    return labels


def _file_loader(file: Path) -> Loader:
    return lambda: load_image(file)


def catalogue(images=None, *, imagenet: str | os.PathLike | bool | None = None) -> dict:
    """The explorer's images as name -> loader.

    images: None (the demo photos), a dict name -> image, or a list of images (paths,
        PIL images or arrays; see ``load_image``).
    imagenet: a folder of the ImageNet subset, True/None (the default place, if there),
        or False (leave it out).
    """
    if images is None:
        found = demo_images()
    elif isinstance(images, dict):
        found = {str(name): _constant(image) for name, image in images.items()}
    else:
        found = {}
        for i, image in enumerate(images):
            name = Path(image).name if isinstance(image, (str, os.PathLike)) else f"image {i}"
            found[name] = _constant(image)
    if imagenet is not False:
        found.update(imagenet_images(None if imagenet in (None, True) else imagenet))
    if not found:
        raise ShapCAMError("the explorer needs at least one image")
    return found


def _constant(image) -> Loader:
    return lambda: load_image(image)


def decode_upload(content: bytes, name: str) -> Image.Image:
    """A PIL RGB image from an uploaded file's bytes, or a ShapCAMError saying why not."""
    try:
        return Image.open(io.BytesIO(bytes(content))).convert("RGB")
    except Exception as error:  # PIL raises several types for bad files
        raise ShapCAMError(
            f"cannot read the uploaded file {name!r} as an image: {error}"
        ) from error
