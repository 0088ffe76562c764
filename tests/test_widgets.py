"""The explorer driven from Python: outputs change, and agree with ShapCAM.attribute."""

import dataclasses
import datetime
import io
import json
import re
import time
import warnings
from pathlib import Path

import matplotlib.text
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

ipywidgets = pytest.importorskip("ipywidgets")

from shapcam_widgets import ShapCAM, ShapCAMError, load_model  # noqa: E402
from shapcam_widgets.models import Preprocess  # noqa: E402
from shapcam_widgets.widgets import ShapCAMExplorer, render  # noqa: E402
from shapcam_widgets.widgets import explorer as explorer_module  # noqa: E402
from shapcam_widgets.widgets.choices import layer_choices  # noqa: E402
from shapcam_widgets.widgets.engine import (  # noqa: E402
    ByteCache,
    auto_block_size,
    entry_size,
    reachable_bytes,
)
from shapcam_widgets.widgets.images import catalogue, imagenet_images  # noqa: E402
from shapcam_widgets.widgets.worker import interruptible  # noqa: E402

NOW = datetime.datetime.now(datetime.timezone.utc)
EFFICIENCY = re.compile(r"sum of phi = (-?[\d.]+); v\(full\) - v\(empty\) = .* = (-?[\d.]+) ")


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture
def explorer(lite0):
    return lite0_explorer(lite0)


def lite0_explorer(lite0, **kwargs) -> ShapCAMExplorer:
    """An explorer of Lite0 at blocks.6 on the demo photos, computing in the caller."""
    model, preprocess = lite0
    return ShapCAMExplorer(
        model,
        preprocess=preprocess,
        layer="blocks.6",
        imagenet=False,
        background=False,
        device="cpu",
        **{"n_samples": 4, **kwargs},
    )


def tiny_model(batch_norm: bool = False, channels: int = 6, stride: int = 4) -> nn.Module:
    """Layers "0" to "3" (with a batch norm "1", "0" to "4"), 32 px in, 3 classes; layer
    "2" (or "3") has ``channels`` channels on a (8 / stride) x (8 / stride) grid."""
    torch.manual_seed(0)
    first = [nn.Conv2d(3, 4, 3, stride=4, padding=1)]
    if batch_norm:
        first.append(nn.BatchNorm2d(4))
        first[1].running_mean.uniform_(-1, 1)
    return nn.Sequential(
        *first,
        nn.ReLU(),
        nn.Conv2d(4, channels, 3, stride=stride, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 3),
    ).eval()


def tiny_explorer(
    model: nn.Module | None = None,
    background: bool = False,
    class_names: tuple[str, ...] = ("a", "b", "c"),
    **kwargs,
) -> ShapCAMExplorer:
    rng = np.random.default_rng(0)
    images = {"noise": rng.random((32, 32, 3)), "ramp": np.linspace(0, 1, 32 * 32 * 3)}
    images["ramp"] = images["ramp"].reshape(32, 32, 3)
    return ShapCAMExplorer(
        model or tiny_model(),
        images,
        preprocess=Preprocess(32),
        class_names=list(class_names),
        imagenet=False,
        background=background,
        device="cpu",
        **{"n_samples": 4, **kwargs},
    )


def efficiency(explorer) -> tuple[float, float]:
    found = EFFICIENCY.search(explorer.panels.efficiency.value)
    assert found, explorer.panels.efficiency.value
    return float(found[1]), float(found[2])


def test_first_view_is_top1_with_top5_choices(explorer):
    settings, result = explorer.settings, explorer.result
    assert explorer.error is None
    assert settings.image == "chelsea" and settings.layer == "blocks.6"
    probs = explorer.engine.probabilities("chelsea")
    assert settings.target == int(probs.argmax()) == result.target
    assert [v for _, v in explorer.controls.target.options] == probs.topk(5).indices.tolist()
    assert result.n_orderings == 4 and result.phi.shape == (7, 7)
    assert explorer.panels.overlay.value[:4] == b"\x89PNG"
    assert "done · 4 orderings" in explorer.panels.status.value
    total, difference = efficiency(explorer)
    assert total == pytest.approx(difference, abs=2e-6)
    assert "efficiency holds" in explorer.panels.efficiency.value


def test_agrees_with_attribute(explorer, lite0):
    model, preprocess = lite0
    explorer.set(target=282, seed=3, n_samples=16, value="logit", baseline="mean")
    shown = explorer.result
    reference = ShapCAM(model, "blocks.6", device="cpu")
    expected = reference.attribute(
        explorer.engine.inputs("chelsea"), 282, value="logit", baseline="mean", n_samples=16, seed=3
    )
    assert (shown.target, shown.n_orderings, shown.seed) == (282, 16, 3)
    # the same orderings; float32 network outputs differ in the last bits between batch sizes
    np.testing.assert_allclose(shown.phi, expected.phi, rtol=0, atol=1e-5)
    np.testing.assert_allclose(shown.stderr, expected.stderr, rtol=0, atol=1e-5)
    assert shown.v_full == pytest.approx(expected.v_full)
    assert shown.v_empty == pytest.approx(expected.v_empty)


def test_more_samples_extend_earlier_ones(explorer):
    first = explorer.result
    explanation = explorer._entry.explanation
    explorer.set(n_samples=16)
    assert explorer._entry.explanation is explanation
    assert explorer.result.n_orderings == 16
    assert [r.n_orderings for r in explorer.history()] == [2, 4, 8, 16]
    # going back shows exactly the earlier map, with no new orderings
    explorer.set(n_samples=4)
    np.testing.assert_array_equal(explorer.result.phi, first.phi)
    assert explanation.n_orderings == 16


def test_outputs_change_with_the_controls(explorer):
    before = explorer.panels.overlay.value, explorer.panels.stderr.value
    explorer.controls.samples.value = 8
    after_samples = explorer.panels.overlay.value
    assert after_samples != before[0] and explorer.panels.stderr.value != before[1]
    second_class = explorer.controls.target.options[1][1]
    explorer.controls.target.value = second_class
    assert explorer.result.target == second_class
    assert explorer.panels.overlay.value != after_samples
    assert f"(#{second_class})" in explorer.panels.status.value
    overlay = explorer.panels.overlay.value
    explorer.controls.display.value = "positive"
    assert explorer.panels.overlay.value != overlay
    overlay = explorer.panels.overlay.value
    explorer.controls.opacity.value = 0.9
    assert explorer.panels.overlay.value != overlay
    assert explorer.settings.target == second_class  # display changes keep the class


def test_one_explainer_per_layer(explorer):
    """Value, baseline, class and seed share one ShapCAM (one trace of the network)."""
    explorer.set(value="logit", baseline="blur", seed=2, block_size=2)
    assert explorer.result.phi.shape == (4, 4)
    explorer.set(layer="blocks.5")
    assert set(explorer.engine._cams) == {"blocks.6", "blocks.5"}


def test_a_train_mode_model_is_explained_in_eval_mode():
    model = tiny_model(batch_norm=True)  # batch statistics in train mode change the map
    reference = tiny_explorer(model, layer="3")
    model.train()
    running_mean = model[1].running_mean.clone()
    explorer = tiny_explorer(model, layer="3")
    np.testing.assert_array_equal(explorer.result.phi, reference.result.phi)
    probs = explorer.engine.probabilities("noise")
    torch.testing.assert_close(probs, reference.engine.probabilities("noise"), rtol=0, atol=0)
    explorer.set(compare=True)  # pytorch-grad-cam's maps, in eval mode too
    assert explorer.error is None
    assert model.training and torch.equal(model[1].running_mean, running_mean)


def test_cache_per_settings(explorer):
    entry = explorer._entry
    explorer.controls.seed.value = 1
    assert explorer._entry is not entry
    other = explorer.result.phi
    explorer.controls.seed.value = 0
    assert explorer._entry is entry
    assert not np.array_equal(explorer.result.phi, other)


def test_new_image_resets_class_to_top1(explorer):
    explorer.controls.target.value = explorer.controls.target.options[2][1]
    explorer.controls.image.value = "coffee"
    probs = explorer.engine.probabilities("coffee")
    assert explorer.result.target == int(probs.argmax())
    assert explorer.controls.target.value == int(probs.argmax())


def test_search_over_all_classes(explorer):
    label = next(o for o in explorer.controls.search.options if o.startswith("goldfish"))
    explorer.controls.search.value = label
    assert explorer.result.target == 1
    assert explorer.controls.target.value == 1
    assert len(explorer.controls.target.options) == 6
    assert len(explorer.controls.search.options) == 1000


def test_upload_adds_and_selects_the_image(explorer):
    buffer = io.BytesIO()
    Image.fromarray(np.full((50, 60, 3), 200, np.uint8)).save(buffer, format="PNG")
    explorer.controls.upload.value = (
        {
            "name": "grey.png",
            "type": "image/png",
            "size": 0,
            "last_modified": NOW,
            "content": buffer.getvalue(),
        },
    )
    assert explorer.controls.image.value == "upload: grey.png"
    assert explorer.settings.image == "upload: grey.png"
    assert explorer.error is None


def test_errors_show_in_the_widget(explorer, monkeypatch):
    explorer.controls.upload.value = (
        {
            "name": "bad.png",
            "type": "image/png",
            "size": 3,
            "last_modified": NOW,
            "content": b"not",
        },
    )
    assert explorer.panels.error.layout.display is None
    assert "bad.png" in explorer.panels.error.value

    # a failure inside the computation is shown, and the next success clears it
    def broken(_settings):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(explorer.engine, "entry", broken)
    explorer.controls.seed.value = 5
    assert "model exploded" in explorer.panels.error.value
    assert "traceback" in explorer.panels.error.value
    assert explorer.error == "model exploded"
    monkeypatch.undo()
    explorer.controls.seed.value = 0
    assert explorer.panels.error.layout.display == "none" and explorer.error is None


def test_set_rejects_bad_values(explorer):
    with pytest.raises(ShapCAMError, match="unknown settings"):
        explorer.set(colour="red")
    with pytest.raises(ShapCAMError, match="class must be"):
        explorer.set(target=1000)
    with pytest.raises(ShapCAMError, match=r"invalid n_samples 3; valid: 1, 2, 4, .*, 4096"):
        explorer.set(n_samples=3)
    # blocks.6 is 7 x 7: blocks of 7 or 8 cells would leave one player
    with pytest.raises(ShapCAMError, match=r"invalid block_size 7; valid: 0, 1, 2, 4$"):
        explorer.set(block_size=7)
    with pytest.raises(ShapCAMError, match=r"invalid compare 'yes'; valid: True or False"):
        explorer.set(compare="yes")


def test_background_work_is_superseded(lite0):
    model, preprocess = lite0
    explorer = ShapCAMExplorer(  # blocks.5: the general path, minutes for 4,096 orderings
        model,
        preprocess=preprocess,
        layer="blocks.5",
        imagenet=False,
        n_samples=4096,
        device="cpu",
    )
    explorer.set(n_samples=8)  # supersedes the 4,096 orderings at once
    assert explorer.wait(120)
    assert explorer.result.n_orderings == 8
    assert explorer._entry.explanation.n_orderings < 4096
    assert "done · 8 orderings" in explorer.panels.status.value


def test_comparisons_and_scorecam_on_demand():
    explorer = tiny_explorer(layer="2")
    assert explorer.result.phi.shape == (2, 2)
    assert explorer.panels.comparison.layout.display == "none"
    explorer.controls.compare.value = True
    assert explorer.panels.comparison.layout.display is None
    keys = {key[-1] for key in explorer._comparisons}
    assert keys == {"Grad-CAM", "Grad-CAM++", "Layer-CAM"}
    panel = explorer.panels.comparison.value
    explorer.compute_scorecam()
    assert "Score-CAM" in {key[-1] for key in explorer._comparisons}
    assert explorer.panels.comparison.value != panel
    assert explorer.error is None


def test_custom_model_layers_and_blocks():
    explorer = tiny_explorer()
    assert set(explorer._layers) == {"0", "1", "2", "3"}
    assert explorer.settings.layer == "3"  # the last layer with more than one cell
    explorer.set(layer="0", block_size=2)
    assert explorer.result.phi.shape == (4, 4) and explorer.result.block_size == 2
    explorer.set(block_size=0)  # auto: 8 x 8 cells are 64 players, one cell each
    assert explorer.settings.block_size == 1


def test_auto_block_size():
    assert auto_block_size((7, 7)) == 1
    assert auto_block_size((14, 14)) == 2
    assert auto_block_size((112, 112)) == 14


def test_layer_choices(lite0):
    model, _ = lite0
    blocks = layer_choices(model, 224)
    assert blocks["blocks.6"] == (320, 7, 7) and "blocks.6.0.conv_pwl" not in blocks
    assert len(layer_choices(model, 224, "all")) > len(blocks)
    with pytest.raises(ValueError, match="not spatial"):
        layer_choices(model, 224, ["nope"])


def test_image_catalogue(tmp_path, monkeypatch):
    names = list(catalogue(imagenet=False))
    assert names == ["chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "grace_hopper"]
    for loader in catalogue(imagenet=False).values():
        assert loader().mode == "RGB"
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01 tench\nn02 goldfish\n")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n02 1 1 5 5\n"
    )
    monkeypatch.setenv("SHAPCAM_IMAGENET", str(tmp_path))
    assert list(imagenet_images()) == ["imagenet/00000001 (goldfish)"]
    assert "imagenet/00000001 (goldfish)" in catalogue()
    monkeypatch.setenv("SHAPCAM_IMAGENET", str(tmp_path / "missing"))
    assert imagenet_images() == {}


def png_upload(name: str, array: np.ndarray, format: str = "PNG") -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    content = buffer.getvalue()
    return {"name": name, "type": "image/png", "size": len(content), "last_modified": NOW,
            "content": content}  # fmt: skip


def noise_array(seed: int, shape=(40, 48, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_a_new_upload_under_an_old_name_is_explained_afresh():
    """Issue 11, defect 1: caches follow the image's content, not its name."""
    explorer = tiny_explorer(layer="2")
    explorer.set(compare=True)
    explorer.controls.upload.value = (png_upload("my_bus.png", noise_array(1)),)
    first = explorer.result
    explorer.controls.upload.value = (png_upload("my_bus.png", noise_array(2)),)
    assert explorer.error is None and explorer.settings.image == "upload: my_bus.png"
    second = explorer.result

    fresh = tiny_explorer(layer="2")
    fresh.controls.upload.value = (png_upload("other.png", noise_array(2)),)
    fresh.set(compare=True, target=second.target)
    assert second.v_full != first.v_full
    assert second.v_full == pytest.approx(fresh.result.v_full)
    np.testing.assert_array_equal(second.phi, fresh.result.phi)
    assert explorer.panels.overlay.value == fresh.panels.overlay.value
    assert explorer.panels.comparison.value == fresh.panels.comparison.value


@pytest.mark.parametrize("n_samples", [1, 2])
def test_every_sample_count_has_a_map(n_samples):
    """Issue 11, defect 2: 1 and 2 orderings show one antithetic pair, also after more."""
    explorer = tiny_explorer()
    explorer.set(n_samples=16)
    explorer.set(n_samples=n_samples)
    assert explorer.error is None
    assert explorer.result.n_orderings == 2 and "done · 2 orderings" in explorer.panels.status.value
    explorer.set(seed=1)  # a new game, started at one pair
    assert explorer.error is None and explorer.result.n_orderings == 2


def test_the_overlay_is_redrawn_when_a_sample_count_comes_back():
    """Issue 11, defect 3: 16, then 1, then 16 again shows the map of 16, not the picture."""
    explorer = tiny_explorer()
    explorer.set(n_samples=16)
    overlay = explorer.panels.overlay.value
    explorer.set(n_samples=1)
    explorer.set(n_samples=16)
    assert explorer.panels.overlay.value == overlay
    assert "done · 16 orderings" in explorer.panels.status.value


def test_rapid_changes_end_on_the_last_map():
    """Issue 11, defect 3: superseded background work leaves the last setting's map."""
    reference = tiny_explorer()
    reference.set(n_samples=16)
    explorer = tiny_explorer(background=True)
    for n_samples in (16, 2, 8, 16, 1, 16):
        if n_samples == 1:  # the drag rests on 1 (where it once crashed)
            explorer.wait(120)
        explorer.set(n_samples=n_samples)
        if n_samples == 1:
            explorer.wait(120)
    assert explorer.wait(120)
    assert explorer.error is None
    assert "done · 16 orderings" in explorer.panels.status.value
    assert explorer.panels.overlay.value == reference.panels.overlay.value


def test_readouts_of_other_settings_are_cleared_until_the_first_map():
    """Issue 11, defect 5: no efficiency line or panel of the previous setting meanwhile."""
    explorer = tiny_explorer()
    seen = []
    for panel in ("efficiency", "stderr", "convergence"):
        getattr(explorer.panels, panel).observe(
            lambda change, panel=panel: seen.append((panel, change["new"])), names="value"
        )
    before = explorer.result
    explorer.set(seed=1)
    first = {panel: value for panel, value in reversed(seen)}  # each panel's first value
    assert "waiting" in first["efficiency"]
    assert first["stderr"] == render.placeholder_png("standard error: waiting for a map")
    assert first["convergence"] == render.placeholder_png(
        "convergence: waiting for a map", wide=True
    )
    assert explorer.result is not before and explorer.result.seed == 1
    assert "waiting" not in explorer.panels.efficiency.value

    explorer.set(compare=True)
    comparisons = []
    explorer.panels.comparison.observe(lambda change: comparisons.append(change["new"]), "value")
    explorer.set(seed=2)  # the same class: Grad-CAM's maps stay
    assert comparisons == []
    explorer.set(target=explorer.controls.target.options[1][1])
    waiting = render.placeholder_png(
        "comparison: waiting for the Shap-CAM map", size=render.COMPARISON_SIZE
    )
    assert comparisons[0] == waiting and comparisons[-1] != waiting


def test_a_failed_upload_says_which_file_and_why_next_to_the_map(explorer):
    """Issue 11, defect 7."""
    explorer.controls.upload.value = (
        {"name": "notes.png", "type": "image/png", "size": 3, "last_modified": NOW,
         "content": b"not"},
    )  # fmt: skip
    message = explorer.panels.error.value
    assert "notes.png" in message and "not an image format" in message
    assert "BytesIO" not in message
    assert explorer.controls.upload.value == ()  # the button no longer says "upload (1)"
    beside = next(
        box
        for box in explorer.widget.children[0].children
        if explorer.panels.overlay in getattr(box, "children", ())
    )
    assert explorer.panels.error in beside.children


@pytest.mark.parametrize("preprocess", [Preprocess(32), Preprocess(32, resize=40)])
def test_uploads_are_preprocessed_as_explain_does(tmp_path, preprocess):
    """Issue 11, defect 10: the explorer's input is ``preprocess(path)``, as in
    ``shapcam explain`` and ``ShapCAM.attribute(preprocess(path))``."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(noise_array(3, (70, 90, 3))).save(path, quality=90)
    explorer = ShapCAMExplorer(
        tiny_model(),
        {"photo": str(path)},
        preprocess=preprocess,
        class_names=["a", "b", "c"],
        imagenet=False,
        n_samples=2,
        background=False,
        device="cpu",
    )
    explorer.controls.upload.value = (
        {"name": "photo.jpg", "type": "image/jpeg", "size": 0, "last_modified": NOW,
         "content": path.read_bytes()},
    )  # fmt: skip
    expected = preprocess(path)
    assert torch.equal(explorer.engine.inputs("upload: photo.jpg"), expected)
    assert torch.equal(explorer.engine.inputs("photo"), expected)
    # the picture shown: the crop the network sees, or the whole image unsquashed
    shown = explorer.engine.picture("photo")
    if preprocess.resize is None:  # 90 x 70, shrunk to 2 x 32 = 64 px on its longer side
        expected = Image.open(path).resize((64, 50), Image.BILINEAR)
        assert np.array_equal(np.asarray(shown), np.asarray(expected))
    else:
        assert np.array_equal(np.asarray(shown), preprocess.picture(path))


def test_efficiency_line_and_search_box(explorer):
    """Issue 11, defect 11: a negative v(empty) in brackets; the search box empties."""
    explorer.set(value="logit")
    result = dataclasses.replace(explorer.result, v_empty=-0.413762)
    line = explorer_module._efficiency_html(result)
    assert "- (-0.413762) =" in line and "- -" not in line
    label = next(o for o in explorer.controls.search.options if o.startswith("goldfish"))
    explorer.controls.search.value = label
    assert explorer.result.target == 1 and explorer.controls.search.value == ""


def test_caches_are_capped_in_bytes():
    """Issue 11, defect 6: games, images and comparison maps stay under caps in bytes."""
    cache = ByteCache(100)
    for key in range(5):
        cache.put(key, np.zeros(40, np.uint8))
    assert list(cache) == [3, 4] and cache.nbytes() == 80
    cache.put("big", np.zeros(500, np.uint8))  # the newest value stays, alone
    assert list(cache) == ["big"]

    weights = torch.zeros(1000)  # 4,000 bytes, held by a closure and by a view of it
    value_function = (lambda weights: lambda x: x * weights)(weights)
    held = {"f": value_function, "view": weights[:10], "model": nn.Linear(100, 100)}
    assert reachable_bytes(held) == 4000  # the module (the shared model) is not counted

    explorer = tiny_explorer()
    one_game = entry_size(explorer._entry)
    explorer.engine._entries.max_bytes = 3 * one_game
    for seed in range(1, 8):
        explorer.set(seed=seed)
    assert len(explorer.engine._entries) == 3
    assert explorer.engine._entries.nbytes() <= 3 * one_game


def test_close_frees_the_explorer(monkeypatch):
    """Issue 11, defect 6: close() ends the work and the widgets; running a cell again
    closes the explorers it made before, not those made beside them in the same run."""
    monkeypatch.setattr(explorer_module, "_running_cell", lambda: ("cell-1", "run-1"))
    first = tiny_explorer(background=True)
    assert first.wait(60)
    beside = tiny_explorer()
    assert first.result is not None and first.error is None
    ids = {widget.model_id for widget in explorer_module._descendants(first.widget)}
    assert ids <= set(ipywidgets.Widget.widgets)
    monkeypatch.setattr(explorer_module, "_running_cell", lambda: ("cell-1", "run-2"))
    second = tiny_explorer(background=True)  # the cell runs again
    assert beside.result is None
    assert not first.busy() and first.result is None and len(first.engine._entries) == 0
    assert not ids & set(ipywidgets.Widget.widgets)
    first.set(seed=3)  # ignored: nothing runs after close()
    assert not first.busy()
    assert second.wait(60) and second.error is None and second.result is not None
    second.close()
    assert second.widget.comm is None


def test_stop_and_new_settings_end_a_large_game_at_once(lite0):
    """Issue 11, defect 4: the first step of blocks.2 at 1 x 1 cells (784 players, tens
    of seconds) ends within about a second on stop() or on a change of layer."""
    model, preprocess = lite0
    explorer = ShapCAMExplorer(
        model, preprocess=preprocess, layer="blocks.6", imagenet=False, n_samples=1, device="cpu"
    )
    assert explorer.wait(120)
    for leave, status in (
        (explorer.stop, "stopped"),
        (lambda: explorer.set(layer="blocks.6"), "done"),
    ):
        explorer.set(layer="blocks.2", block_size=1, n_samples=64)
        deadline = time.monotonic() + 60
        while "sampling" not in explorer.panels.status.value and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # inside the first pair of orderings
        assert explorer.busy(), explorer.panels.status.value
        started = time.perf_counter()
        leave()
        assert explorer.wait(30)
        assert time.perf_counter() - started < 5  # tens of seconds before
        assert explorer.error is None and status in explorer.panels.status.value
    assert explorer.settings.layer == "blocks.6"


def test_the_status_says_how_long_a_game_will_take(monkeypatch):
    """Issue 11, defect 4: before a game's first map, the time it and the run will take."""
    explorer = tiny_explorer()
    statuses = []
    explorer.panels.status.observe(lambda change: statuses.append(change["new"]), names="value")
    explorer.set(seed=1)  # the layer's time per evaluation is known from the first game
    assert any("first map in about" in status for status in statuses)
    monkeypatch.setattr(explorer_module, "LONG_RUN", 0.0)
    explorer.set(seed=2, n_samples=64)
    assert any("64 orderings in about" in status for status in statuses)
    explorer.stop()
    assert "stopped · 64 orderings shown" in explorer.panels.status.value


def test_a_step_cut_short_is_undone():
    """Issue 11, defect 4: a step interrupted inside the network leaves the game as
    before it, so that its later maps are those of its seed, uninterrupted."""
    explorer = tiny_explorer(layer="0")  # the general path: one forward pass per step
    engine, settings = explorer.engine, explorer.settings
    engine._entries.clear()
    entry = engine.entry(settings)
    calls = []

    def check():
        calls.append(None)
        if len(calls) == 20:  # the fourth step (16 orderings), inside the network
            raise RuntimeError("superseded")

    with pytest.raises(RuntimeError), interruptible(engine.model, check):
        list(engine.refine(entry, 64, check))
    assert engine.cached(settings) is entry
    interrupted = list(engine.refine(entry, 64, lambda: None))[-1]

    engine._entries.clear()
    fresh = engine.entry(settings)
    uninterrupted = list(engine.refine(fresh, 64, lambda: None))[-1]
    np.testing.assert_array_equal(interrupted.phi, uninterrupted.phi)
    assert interrupted.n_evaluations == uninterrupted.n_evaluations


def test_app_notebook_has_no_book_text():
    """Issue 11, defect 9: the app notebook for Voila is a title, the install cell and the
    explorer, without the chapter's MyST labels, roles or prose."""
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "explorer_app.ipynb"
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert len(markdown) == 1 and markdown[0].startswith("# ") and "\n" not in markdown[0]
    assert cells[1]["metadata"]["tags"] == ["hide-input"]
    assert code[-1].endswith("ShapCAMExplorer()") and len(code) == 2
    for markup in ("(chapter-", "{doc}", "{cite", "{ref}"):
        assert markup not in "".join(markdown + code)


def figure_text(figure) -> str:
    """Every text drawn on a matplotlib figure (titles, labels, notes), one per line."""
    return "\n".join(t.get_text() for t in figure.findobj(matplotlib.text.Text))


def test_an_additive_game_says_so_instead_of_plotting_rounding_noise(explorer):
    """Issue 11, teaching: the logit on the last stage is additive (every standard error
    ~1e-9); the standard-error and convergence panels say so, without a log axis of noise
    ("Data has no positive values" where the errors are exactly 0)."""
    explorer.set(value="logit", n_samples=8)
    history = explorer.history()
    assert render.additive(explorer.result)
    assert "this game is additive" in figure_text(render.stderr_figure(explorer.result))
    zero = [
        dataclasses.replace(r, stderr=np.where(np.isnan(r.stderr), np.nan, 0.0)) for r in history
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "this game is additive" in figure_text(render.convergence_figure(zero))
    explorer.set(value="prob")
    assert not render.additive(explorer.result)
    assert "additive" not in figure_text(render.stderr_figure(explorer.result))
    assert "additive" not in figure_text(render.convergence_figure(explorer.history()))


def test_efficiency_line_is_a_plain_sentence_with_the_formula_folded(explorer):
    """Issue 11, teaching: what the cells share, in words; the formula under a toggle."""
    line = explorer.panels.efficiency.value
    sentence, formula = line.split("<details>")
    assert (
        "The 49 cells share 0.793 = v(all cells) 0.794 \u2212 v(no cells) 0.001 (probability)."
        in sentence
    )
    assert "sum of phi" not in sentence and "efficiency holds: sum of phi" in formula
    explorer.set(block_size=2)
    assert "The 16 blocks of 2 x 2 cells share" in explorer.panels.efficiency.value


def test_comparison_panel_in_viridis_with_a_colour_bar_and_overlay_states_its_scale(explorer):
    """Issue 11, teaching: Grad-CAM and the others in the book's sequential viridis on
    [0, 1] (not jet) with a colour bar; the Shap-CAM title says its colour scale."""
    picture = explorer.engine.picture("chelsea")
    result = explorer.result
    maps = {"Grad-CAM": np.linspace(0, 1, 224 * 224).reshape(224, 224), "Score-CAM": "press"}
    figure = render.comparison_figure(picture, result, maps, shared=False, alpha=0.5)
    heat = figure.axes[2].images[-1]  # Shap-CAM's panel and colour bar come first
    assert heat.get_cmap().name == "viridis" and heat.get_clim() == (0, 1)
    assert render.LIBRARY_UNITS in figure_text(figure)
    shape = np.asarray(picture).shape[:2]  # the overlay upsamples phi to the picture
    largest = np.abs(result.upsample(shape)).max()
    positive = result.upsample(shape, relu=True).max()
    for signed, scale in ((True, f"\u00b1{largest:.2g}"), (False, f"0 to {positive:.2g}")):
        shown = render.overlay_figure(picture, result, signed=signed, alpha=0.5, title="t")
        assert f"colour scale {scale} (per map)" in figure_text(shown)


def test_overlay_draws_the_player_grid_and_marks_cells_beyond_two_standard_errors(explorer):
    """Issue 11, teaching: grid lines at the players' borders, the block size in a caption,
    a dot on each player with |phi| > 2 SE (none before 2 samples); the convergence plot's
    axes name their units."""
    picture = explorer.engine.picture("chelsea")
    counts = []
    for n_samples, block_size in ((2, 0), (16, 2)):
        explorer.set(n_samples=n_samples, block_size=block_size)
        result = explorer.result
        figure = render.overlay_figure(picture, result, signed=True, alpha=0.5, title="t")
        ax = figure.axes[0]
        rows, columns = result.phi.shape
        assert len(ax.lines) == rows - 1 + columns - 1
        with np.errstate(invalid="ignore"):
            marked = int((np.abs(result.phi) > 2 * result.stderr).sum())
        assert len(ax.collections[0].get_offsets()) == marked
        b = result.block_size
        caption = (
            f"players of {b} x {b} cells \u00b7 \u2022 |phi| > 2 SE ({marked} of {rows * columns})"
        )
        assert caption in figure_text(figure)
        counts.append(marked)
    assert counts[0] == 0 and counts[1] > 0
    left, right = render.convergence_figure(explorer.history()).axes
    assert left.get_ylabel() == "phi (prob)" and right.get_ylabel() == "standard error (prob)"
    assert left.get_xlabel() == right.get_xlabel() == "orderings m (log scale)"


def test_every_fixed_width_shrinks_and_every_row_wraps(explorer):
    """Issue 11, defect 8 (the browser test measures it at 360 px): no width over 300 px
    without a max_width, no min_width, and each row of widgets wraps."""
    for widget in explorer_module._descendants(explorer.widget):
        if isinstance(widget, ipywidgets.Layout):
            assert not widget.min_width
            if (widget.width or "").endswith("px") and int(widget.width.removesuffix("px")) > 300:
                assert widget.max_width, widget.width
        if isinstance(widget, ipywidgets.HBox):
            assert widget.layout.flex_flow == "row wrap"


def test_fixed_colour_scale_is_shared_by_the_classes(explorer, monkeypatch):
    """Fixed scale: a weak class is drawn on the top class's limit, and the title says so."""
    titles = []
    draw = render.overlay_figure

    def spy(*args, **options):
        figure = draw(*args, **options)
        titles.append((figure.axes[0].get_title(), figure.axes[0].images[-1].get_clim()))
        return figure

    monkeypatch.setattr(render, "overlay_figure", spy)
    top = float(np.abs(explorer.result.phi).max())
    explorer.controls.scale.value = "fixed"
    assert "(fixed" in titles[-1][0] and titles[-1][1] == pytest.approx((-top, top))
    explorer.controls.target.value = explorer.controls.target.options[-1][1]
    weak = float(np.abs(explorer.result.phi).max())
    assert weak < top and titles[-1][1] == pytest.approx((-top, top))
    explorer.controls.scale.value = "per map"
    assert "(per map)" in titles[-1][0] and titles[-1][1][1] <= weak
