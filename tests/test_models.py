"""Offline ImageNet models, preprocessing and class names."""

import numpy as np
import pytest
import torch
from PIL import Image

from shapcam_widgets import ShapCAMError, imagenet_classes, load_image, load_model, spatial_layers
from shapcam_widgets.models import Preprocess


def test_lite0_recognises_the_cat(lite0, chelsea):
    model, preprocess = lite0
    with torch.no_grad():
        probabilities = model(preprocess(chelsea)).softmax(dim=1)[0]
    top = int(probabilities.argmax())
    assert imagenet_classes()[top] in {"tabby", "tiger cat", "Egyptian cat"}
    assert probabilities[top] > 0.5


@pytest.mark.parametrize("name, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_larger_lites_load_offline(name, size, chelsea):
    model, preprocess = load_model(name)
    x = preprocess(chelsea)
    assert x.shape == (1, 3, size, size)
    with torch.no_grad():
        top = int(model(x).argmax())
    assert 281 <= top <= 285  # a cat class


def test_unknown_model():
    with pytest.raises(ShapCAMError, match="valid: efficientnet_lite0"):
        load_model("vgg16")


def test_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[285] == "Egyptian cat"


def test_preprocess_resizes_whole_image_without_crop():
    picture = np.zeros((100, 300, 3), np.uint8)
    picture[:, :100] = 255  # left third white
    x = Preprocess(224)(picture)
    assert x.shape == (1, 3, 224, 224)
    assert x.min() == -1 and x.max() == 1  # (x - 0.5) / 0.5
    assert torch.all(x[0, :, :, :70] == 1) and torch.all(x[0, :, :, 80:] == -1)


@pytest.mark.parametrize(
    "picture",
    [
        np.full((20, 30), 128, np.uint8),
        np.full((20, 30, 1), 128, np.uint8),
        np.full((20, 30, 4), 128, np.uint8),
        np.full((20, 30, 3), 128 / 255, np.float64),
        Image.new("L", (30, 20), 128),
        Image.new("RGBA", (30, 20), (128, 128, 128, 0)),
    ],
)
def test_grayscale_rgba_and_float_images_are_converted(picture):
    x = Preprocess(32)(picture)
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 128 / 255 * 2 - 1))


def test_bad_images(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ShapCAMError, match="cannot read image"):
        load_image(broken)
    with pytest.raises(ShapCAMError, match="cannot read image"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ShapCAMError, match="H x W x 3"):
        load_image(np.zeros((4, 5, 6)))


def test_spatial_layers_of_lite0(lite0):
    layers = spatial_layers(lite0[0])
    assert layers["blocks.6"] == (320, 7, 7)
    assert layers["conv_head"] == (1280, 7, 7)
    assert layers["blocks.4"] == (112, 14, 14)
    assert "global_pool.pool" not in layers and "classifier" not in layers
