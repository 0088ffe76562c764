"""Issue 11: the explorer's class search, image filter, block-size choices with time
estimates, and pictures shown with their aspect ratio."""

import html
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

ipywidgets = pytest.importorskip("ipywidgets")

from test_widgets import NOW, noise_array, tiny_explorer, tiny_model  # noqa: E402

from shapcam_widgets.models import Preprocess, imagenet_classes  # noqa: E402
from shapcam_widgets.widgets import ShapCAMExplorer, render  # noqa: E402
from shapcam_widgets.widgets.choices import (  # noqa: E402
    best_match,
    block_choices,
    filter_images,
    image_count_text,
)
from shapcam_widgets.widgets.engine import (  # noqa: E402
    Engine,
    block_players,
    seconds_to,
    shown_picture,
)

IMAGENET_NAMES = [
    "imagenet/00000001 (snake)",
    "imagenet/00000002 (tiger shark)",
    "imagenet/00000003 (Tiger Cat)",
    "imagenet/00000004 (goldfish)",
    "imagenet/00000005 (great white shark)",
]


def search_explorer(**kwargs) -> ShapCAMExplorer:
    """The tiny 3-class network with class names to search, on two 32 px images."""
    return tiny_explorer(class_names=("tiger shark", "tiger", "tabby"), **kwargs)


def press_enter(explorer: ShapCAMExplorer, text: str) -> None:
    """What the page sends: the text (every keystroke), then "submit" for Enter."""
    explorer.controls.search.value = text
    explorer.controls.search._handle_custom_msg({"event": "submit"}, [])


# ---- search --------------------------------------------------------------------------


def test_best_match_of_imagenet_classes():
    names = imagenet_classes()
    assert best_match("tiger", names) == 292 and names[292] == "tiger"
    assert best_match("  TIGER ", names) == 292
    assert best_match("tiger sh", names) == 3 and names[3] == "tiger shark"
    # no name is or starts with "shark": a word starting with it, the lowest index
    assert best_match("shark", names) == 2 and names[2] == "great white shark"
    assert best_match("zzqx", names) is None and best_match(" ", names) is None


@pytest.mark.parametrize(
    "names, expected",
    [
        (["sea tiger", "tigerish", "tiger"], 2),  # the whole name first
        (["a tigerfish", "stiger", "tigers"], 2),  # then the start of the name
        (["stiger", "big tigers"], 1),  # then the start of a word
        (["stiger", "lion"], 0),  # then anywhere
    ],
)
def test_best_match_ranks(names, expected):
    assert best_match("Tiger", names) == expected


def test_enter_selects_the_best_match_and_empties_the_box():
    explorer = search_explorer()
    explorer.controls.search.value = "tig"  # typing alone chooses nothing
    assert explorer.settings.target == int(explorer.engine.probabilities("noise").argmax())
    press_enter(explorer, "tiger")
    assert explorer.settings.target == explorer.result.target == 1
    assert explorer.controls.target.value == 1 and explorer.controls.search.value == ""
    assert "tiger (#1)" in explorer.panels.status.value


def test_a_class_picked_from_the_list_is_chosen_at_once():
    explorer = search_explorer()
    explorer.controls.search.value = "tabby · #2"  # the page sends the option's text
    assert explorer.result.target == 2 and explorer.controls.search.value == ""


def test_no_match_says_so_and_changes_nothing_else():
    explorer = search_explorer()
    before = explorer.settings, explorer.panels.overlay.value, explorer.controls.target.value
    press_enter(explorer, "zebra")
    assert "no class name contains 'zebra'" in html.unescape(explorer.panels.error.value)
    assert explorer.panels.error.layout.display != "none"
    assert (explorer.settings, explorer.panels.overlay.value) == before[:2]
    assert explorer.controls.target.value == before[2]
    assert explorer.controls.search.value == "zebra"  # left to correct


def test_text_typed_before_enter_but_arriving_after_it_is_searched_for():
    """The page sends one update at a time: the last keystrokes may reach the kernel
    after Enter's "submit"."""
    explorer = search_explorer()
    press_enter(explorer, "tig")  # "tig" got through; "er" was held back
    assert explorer.settings.target == 0
    explorer.controls.search.value = "tiger"
    assert explorer.settings.target == 1 and explorer.controls.search.value == ""
    explorer._searched = (time.monotonic() - 5, "ti")  # long after an Enter: typing only
    explorer.controls.search.value = "tiger"
    assert explorer.settings.target == 1 and explorer.controls.search.value == "tiger"


# ---- image filter --------------------------------------------------------------------


def test_filter_images():
    assert filter_images(IMAGENET_NAMES, "SHARK") == [IMAGENET_NAMES[1], IMAGENET_NAMES[4]]
    assert filter_images(IMAGENET_NAMES, "tiger ca") == [IMAGENET_NAMES[2]]
    # the image shown stays, in its place
    kept = filter_images(IMAGENET_NAMES, "shark", keep=IMAGENET_NAMES[3])
    assert kept == [IMAGENET_NAMES[1], IMAGENET_NAMES[3], IMAGENET_NAMES[4]]
    assert filter_images(IMAGENET_NAMES, "") == IMAGENET_NAMES
    assert image_count_text(12, 1008, "sh") == "12 of 1,008 images"
    assert image_count_text(1008, 1008, " ") == "1,008 images"


def test_the_filter_narrows_the_image_choices_and_never_changes_the_map():
    explorer = search_explorer()
    c = explorer.controls
    before = explorer.settings, explorer.panels.overlay.value
    c.image_filter.value = "RAM"
    assert list(c.image.options) == ["noise", "ramp"] and c.image.value == "noise"
    assert c.image_count.value == "1 of 2 images"
    c.image_filter.value = "zzz"
    assert list(c.image.options) == ["noise"] and c.image_count.value == "0 of 2 images"
    assert (explorer.settings, explorer.panels.overlay.value) == before
    explorer.set(image="ramp")  # set() reaches images the filter hides
    assert explorer.settings.image == "ramp" and list(c.image.options) == ["ramp"]
    c.upload.value = (
        {"name": "up.png", "type": "image/png", "size": 0, "last_modified": NOW,
         "content": png_bytes(noise_array(1))},
    )  # fmt: skip
    assert explorer.settings.image == c.image.value == "upload: up.png"
    c.image_filter.value = ""
    assert list(c.image.options) == ["noise", "ramp", "upload: up.png"]
    assert c.image_count.value == "3 images" and explorer.settings.image == "upload: up.png"


# ---- block sizes ---------------------------------------------------------------------


def test_block_players_and_time_estimates():
    assert block_players((7, 7), 2) == 16 and block_players((14, 14), 1) == 196
    assert seconds_to(0.5, 3, 3) == 0.5 * 4 * 2  # 4 orderings (a pair), 2 evaluations each


def test_block_choices_name_players_and_auto_block():
    choices = block_choices((14, 14), 64)
    assert choices == [
        ("auto: 2 x 2 (49 players)", 0),
        ("1 x 1 (196 players)", 1),
        ("2 x 2 (49 players)", 2),
        ("4 x 4 (16 players)", 4),
        ("7 x 7 (4 players)", 7),
        ("8 x 8 (4 players)", 8),
    ]
    # a block leaving one player is left out: a game needs two
    assert [b for _, b in block_choices((7, 7), 64)] == [0, 1, 2, 4]
    assert block_choices((112, 112), 64)[0][0] == "auto: 14 x 14 (64 players)"


def test_block_choices_estimate_once_the_rate_is_known():
    rate = 40 / (64 * 195)  # 1 x 1: 196 players, 195 evaluations an ordering
    labels = dict((b, label) for label, b in block_choices((14, 14), 64, rate))
    assert labels[1] == "1 x 1 (196 players, ~40 s to 64 orderings)"
    assert labels[2] == "2 x 2 (49 players, ~10 s to 64 orderings)"
    assert labels[8] == "8 x 8 (4 players, <1 s to 64 orderings)"
    assert labels[0] == "auto: 2 x 2 (49 players)"
    slow = dict((b, label) for label, b in block_choices((28, 28), 256, rate))
    assert slow[1] == "1 x 1 (784 players, ~11 min to 256 orderings)"


def test_block_choices_follow_the_layer_orderings_and_measured_rate():
    explorer = search_explorer(layer="0")  # 8 x 8 cells
    block = explorer.controls.block
    labels = [label for label, _ in block.options]
    assert labels[0] == "auto: 1 x 1 (64 players)"
    assert all("to 4 orderings" in label for label in labels[1:])  # measured by the first run
    rate = explorer.engine.layer_rate("0")
    assert rate > 0 and dict(block.options) == dict(block_choices((8, 8), 4, rate))
    explorer.set(block_size=4)
    assert explorer.settings.block_size == 4
    explorer.set(n_samples=16)
    assert all("to 16 orderings" in label for label, _ in block.options[1:])
    explorer.set(layer="3")  # 2 x 2 cells: 4 x 4 blocks no longer fit, auto instead
    assert [b for _, b in block.options] == [0, 1] and block.value == 0
    assert explorer.settings.block_size == 1 and explorer.error is None


def test_an_engine_without_runs_has_no_rate():
    engine = Engine(tiny_model(), Preprocess(32), {"noise": np.zeros((32, 32, 3))})
    assert engine.layer_rate("0") is None


# ---- pictures ------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_squashed_input_is_shown_with_its_aspect_ratio():
    original = Image.fromarray(noise_array(4, (300, 451, 3)))  # 451 wide, 300 high
    lite0 = Preprocess(224)  # EfficientNet-Lite0: the whole image squashed to 224 x 224
    engine = Engine(tiny_model(), lite0, {"photo": lambda: original})
    picture = engine.picture("photo")
    assert picture.size == (448, 298)  # 2 x 224 on the longer side
    expected = original.resize((448, 298), Image.BILINEAR)
    assert np.array_equal(np.asarray(picture), np.asarray(expected))
    assert torch.equal(engine.inputs("photo"), lite0(original))  # the network input as is
    small = Image.fromarray(noise_array(5, (60, 100, 3)))
    assert shown_picture(small, lite0) is small  # never enlarged


def test_a_cropped_input_is_shown_as_the_crop():
    original = Image.fromarray(noise_array(4, (300, 451, 3)))
    cropped = Preprocess(224, resize=256)
    picture = shown_picture(original, cropped)
    assert picture.size == (224, 224)
    assert np.array_equal(np.asarray(picture), np.asarray(cropped.picture(original)))


def test_a_non_square_upload_is_drawn_non_square(monkeypatch):
    figures = []
    draw = render.overlay_figure

    def spy(*args, **options):
        figures.append(draw(*args, **options))
        return figures[-1]

    monkeypatch.setattr(render, "overlay_figure", spy)
    explorer = search_explorer()
    explorer.controls.upload.value = (
        {"name": "wide.png", "type": "image/png", "size": 0, "last_modified": NOW,
         "content": png_bytes(noise_array(6, (300, 451, 3)))},
    )  # fmt: skip
    assert explorer.engine.picture("upload: wide.png").size == (64, 43)  # 2 x 32 wide
    ax = figures[-1].axes[0]
    assert ax.images[0].get_array().shape[:2] == (43, 64)  # the picture
    assert ax.images[-1].get_array().shape[:2] == (43, 64)  # the map over it
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    assert (right - left) / (bottom - top) == pytest.approx(64 / 43)
