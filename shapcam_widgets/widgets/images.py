"""The explorer's image catalogue: demo photos, the ImageNet subset, uploads.

Images are kept as loaders (called on first use), so that a catalogue of a thousand
ImageNet files costs nothing until one is chosen.
"""

import io
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import ShapCAMError
from ..evaluation.data import ImageNetLOC
from ..models import imagenet_classes, load_image

#: scikit-image photos that ship inside its wheel (others download on demand).
SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left")

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

        if name == "motorcycle_left":  # the left view of a stereo pair
            return load_image(data.stereo_motorcycle()[0])
        return load_image(getattr(data, name)())

    return load


def _grace_hopper() -> Image.Image:
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg") as handle:
        return load_image(Image.open(handle))


def imagenet_images(root: str | os.PathLike | None = None) -> dict[str, Loader]:
    """name -> loader for the images of an ImageNet LOC folder, each name carrying the
    true class; the folder as the evaluation finds it (``evaluation.data.ImageNetLOC``),
    and empty when it is not there."""
    try:
        data = ImageNetLOC(root)
    except ShapCAMError:
        return {}
    names = imagenet_classes()
    return {
        f"imagenet/{sample.image_id[-8:]} ({names[sample.label]})": _file_loader(sample.path)
        for sample in sorted(data, key=lambda sample: sample.image_id)
        if sample.path.is_file()
    }


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
    """An uploaded file's picture, read as ``load_image`` reads a path (the same RGB
    conversion as ``shapcam explain``), or a ShapCAMError with the file's name and why not."""
    try:
        with Image.open(io.BytesIO(bytes(content))) as opened:
            return load_image(opened)
    except UnidentifiedImageError:
        reason = "not an image format Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)"
    except Image.DecompressionBombError:
        reason = f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, the most Pillow opens"
    except OSError as error:  # truncated or corrupt data
        reason = str(error)
    raise ShapCAMError(f"cannot read the uploaded file {name!r}: {reason}")
