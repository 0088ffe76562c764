"""Offline ImageNet models, preprocessing and class names."""

import warnings
import zlib

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


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(
        ShapCAMError, match="valid: efficientnet_lite0.*architecture: alexnet.* resnet50,"
    ):
        load_model("vgg")


def test_torchvision_state_dict_loads_with_imagenet_preprocessing(tmp_path, chelsea):
    from torchvision import transforms
    from torchvision.models import resnet18

    torch.manual_seed(0)
    saved = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(saved.state_dict(), path)
    model, preprocess = load_model("resnet18", weights=path)
    assert not model.training
    for (name, a), (_, b) in zip(
        saved.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    torchvision_way = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    for picture in (chelsea, chelsea.transpose(1, 0, 2)[:301]):  # landscape, portrait
        expected = torchvision_way(Image.fromarray(picture))[None]
        torch.testing.assert_close(preprocess(picture), expected)


def test_torchvision_weights_errors(tmp_path):
    from torchvision.models import resnet18

    with pytest.raises(ShapCAMError, match="needs weights=PATH"):
        load_model("resnet50")
    with pytest.raises(ShapCAMError, match="cannot read weights"):
        load_model("resnet50", weights=tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ShapCAMError, match="not a state dict saved by torch.save"):
        load_model("resnet50", weights=tmp_path / "text.pth")
    torch.save(resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ShapCAMError, match="do not fit torchvision's resnet34"):
        load_model("resnet34", weights=tmp_path / "resnet18.pth")
    with pytest.raises(ShapCAMError, match="weights= is for torchvision"):
        load_model("efficientnet_lite0", weights=tmp_path / "resnet18.pth")


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
        np.dstack([np.full((20, 30, 3), 128, np.uint8), np.full((20, 30), 255, np.uint8)]),
        np.full((20, 30, 3), 128 / 255, np.float64),
        Image.new("L", (30, 20), 128),
        Image.new("RGBA", (30, 20), (128, 128, 128, 255)),
    ],
)
def test_grayscale_opaque_rgba_and_float_images_are_converted(picture):
    x = Preprocess(32)(picture)
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 128 / 255 * 2 - 1))


def _rgba_with_hidden_colours(hidden) -> Image.Image:
    """30 x 20 RGBA: left third transparent in colour ``hidden``, middle half, right opaque."""
    pixels = np.zeros((20, 30, 4), np.uint8)
    pixels[:, :10] = (*hidden, 0)
    pixels[:, 10:20] = (0, 0, 255, 128)
    pixels[:, 20:] = (0, 200, 0, 255)
    return Image.fromarray(pixels)


def test_transparent_pixels_are_composited_on_white(tmp_path):
    picture = _rgba_with_hidden_colours((255, 0, 0))
    path = tmp_path / "rgba.png"
    picture.save(path)
    with pytest.warns(UserWarning, match="rgba.png' has transparent pixels: composited on white"):
        from_file = np.asarray(load_image(path))
    assert (from_file[:, :10] == 255).all()  # the hidden red is gone
    assert (np.abs(from_file[:, 10:20].astype(int) - (127, 127, 255)) <= 1).all()
    assert (from_file[:, 20:] == (0, 200, 0)).all()
    with pytest.warns(UserWarning, match="transparent pixels"):
        other_hidden = np.asarray(load_image(_rgba_with_hidden_colours((0, 0, 0))))
    with pytest.warns(UserWarning, match="transparent pixels"):
        from_array = np.asarray(load_image(np.asarray(picture)))
    assert (from_file == other_hidden).all() and (from_file == from_array).all()
    with pytest.warns(UserWarning, match="transparent pixels"):
        x = Preprocess(30)(picture)
    assert (x[0, :, :, :10] == 1).all()  # white after (x - 0.5) / 0.5


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_la_and_palette_transparency_are_composited(tmp_path, mode):
    picture = Image.new("L", (8, 8), 0)
    if mode == "LA":
        picture = Image.merge("LA", (picture, Image.new("L", (8, 8), 0)))
        path = tmp_path / "la.png"
        picture.save(path)
    else:
        path = tmp_path / "palette.gif"
        picture.convert("P").save(path, transparency=0)
    with pytest.warns(UserWarning, match="transparent pixels"):
        assert (np.asarray(load_image(path)) == 255).all()


def test_only_the_first_frame_of_a_gif_with_a_warning(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "lime", "blue")]
    path = tmp_path / "three.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="has 3 frames: explaining the first frame of 3"):
        first = np.asarray(load_image(path))
    assert (first == (255, 0, 0)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(frames[0])  # one opaque frame: no warning


def huge_png(path, width: int = 20000, height: int = 10000):
    """A tiny PNG file whose header claims width x height pixels."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_says_the_image_is_too_large(tmp_path):
    with pytest.raises(ShapCAMError, match="too large: more than 178,956,970 pixels"):
        load_image(huge_png(tmp_path / "huge.png"))


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
