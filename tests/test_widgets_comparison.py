"""The explorer's comparison row (Shap-CAM beside the Grad-CAM family on one layer and
class, per-map or shared colour scales), Score-CAM's cost and progress, and the fixed
colour limit of ``ShapCAMResult.overlay`` (issue 11)."""

import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

ipywidgets = pytest.importorskip("ipywidgets")
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from test_widgets import lite0_explorer, tiny_explorer, tiny_model  # noqa: E402

from shapcam_widgets import load_model  # noqa: E402
from shapcam_widgets.cam import ShapCAMResult  # noqa: E402
from shapcam_widgets.widgets import ShapCAMExplorer, render  # noqa: E402
from shapcam_widgets.widgets import explorer as explorer_module  # noqa: E402
from shapcam_widgets.widgets.comparisons import (  # noqa: E402
    BATCH_SIZE,
    compare,
    scorecam_passes,
)

ORDER = ["Shap-CAM (prob, positive part)", "Grad-CAM", "Grad-CAM++", "Layer-CAM", "Score-CAM"]


def result_of(phi: np.ndarray) -> ShapCAMResult:
    h, w = phi.shape
    return ShapCAMResult(
        phi=phi, stderr=np.full_like(phi, np.nan), v_full=float(phi.sum()), v_empty=0.0,
        target=0, layer="x", value="prob", baseline="zero", method="m", n_orderings=2,
        n_evaluations=2, seed=0, block_size=1, cells=(h, w), input_size=(4 * h, 4 * w),
        path="fast", seconds=0.0,
    )  # fmt: skip


@pytest.mark.parametrize("signed", [True, False])
def test_overlay_limit_sets_the_colours_and_the_opacity(signed):
    """A given limit sets the colour limits and the opacity: alpha * |heat| / limit."""
    phi = np.array([[0.02, -0.01], [0.005, 0.03]])
    result, picture = result_of(phi), np.zeros((8, 8, 3), np.uint8)
    ax = Figure().add_subplot()
    shown = result.overlay(picture, ax, signed=signed, alpha=0.8, limit=0.1)
    assert shown.get_clim() == ((-0.1 if signed else 0.0), 0.1)
    heat = np.abs(result.upsample((8, 8), relu=not signed))
    assert shown.get_alpha().max() == pytest.approx(0.8 * heat.max() / 0.1)
    np.testing.assert_allclose(shown.get_alpha(), 0.8 * np.clip(heat / 0.1, 0, 1))
    own = result.overlay(picture, Figure().add_subplot(), signed=signed, alpha=0.8)
    assert own.get_clim()[1] == pytest.approx(heat.max())  # default: the map's own largest
    assert own.get_alpha().max() == pytest.approx(0.8)
    below = result.overlay(picture, Figure().add_subplot(), signed=signed, limit=0.01)
    assert below.get_alpha().max() == pytest.approx(0.5)  # clipped at alpha
    figure = render.overlay_figure(picture, result, signed=signed, alpha=0.8, title="t", limit=0.1)
    assert figure.axes[0].images[-1].get_alpha().max() == pytest.approx(0.8 * heat.max() / 0.1)


@pytest.fixture(scope="module")
def compared():
    """A Lite0 explorer on blocks.6 with the comparison row on, and the figures it drew."""
    explorer = lite0_explorer(load_model("efficientnet_lite0"), n_samples=2)
    figures = []
    draw = render.comparison_figure

    def spy(*args, **options):
        figures.append(draw(*args, **options))
        return figures[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render, "comparison_figure", spy)
        explorer.set(compare=True)
        yield explorer, figures


def panels(figure: Figure) -> list:
    """The panels' axes (those that draw the picture), left to right."""
    return [ax for ax in figure.axes if ax.images]


def key(explorer, method: str) -> tuple:
    settings = explorer.settings
    return (explorer.engine.digest(settings.image), settings.layer, settings.target, method)


def test_the_row_has_five_equal_panels_in_order_and_layer_cam_is_the_librarys(compared):
    explorer, figures = compared
    explorer.set(comparison_scale="per map")
    figure = figures[-1]
    figure.canvas.draw()
    shown = panels(figure)
    assert [ax.get_title().split("\n")[0] for ax in shown] == ORDER
    assert "press the button" in shown[-1].get_title() and len(shown[-1].images) == 1
    sizes = {tuple(np.round(ax.get_window_extent().size, 3)) for ax in shown}
    assert len(sizes) == 1  # the same size, all over the same picture
    picture = np.asarray(explorer.engine.picture(explorer.settings.image))
    for ax in shown:
        np.testing.assert_array_equal(ax.images[0].get_array(), picture)
    for ax in shown[:4]:
        heat = ax.images[-1]
        assert heat.get_cmap().name == "viridis"
        assert heat.get_extent() == [-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5]
    result = explorer.result
    np.testing.assert_allclose(
        shown[0].images[-1].get_array(), result.upsample(picture.shape[:2], relu=True)
    )
    assert (
        f"{explorer.settings.layer} \u00b7 the same class and layer" in figure.texts[0].get_text()
    )

    model = explorer.engine.model
    module = dict(model.named_modules())["blocks.6"]
    cam = LayerCAM(model=model, target_layers=[module])
    try:
        direct = cam(
            input_tensor=explorer.engine.inputs(explorer.settings.image).clone(),
            targets=[ClassifierOutputTarget(explorer.settings.target)],
        )[0]
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    assert np.allclose(shown[3].images[-1].get_array(), direct, atol=1e-6)
    assert not np.allclose(direct, shown[1].images[-1].get_array(), atol=1e-3)  # not Grad-CAM


def test_per_map_scales_each_have_a_colour_bar_from_zero_to_the_maps_largest(compared):
    explorer, figures = compared
    explorer.set(comparison_scale="per map")
    figure = figures[-1]
    shown = panels(figure)
    bars = [ax for ax in figure.axes if not ax.images]
    assert len(bars) == 4  # one per computed map; Score-CAM is not computed yet
    for ax, bar in zip(shown[:4], bars, strict=True):
        heat = ax.images[-1]
        assert heat.get_clim() == (0.0, pytest.approx(heat.get_array().max()))
        assert bar.get_xlim() == pytest.approx(heat.get_clim())
    assert bars[0].get_xlabel() == "phi (prob)"
    assert {bar.get_xlabel() for bar in bars[1:]} == {render.LIBRARY_UNITS}
    assert "[0, 1]" in render.LIBRARY_UNITS
    assert "colour scale per map" in figure.texts[0].get_text()


def test_shared_scale_divides_each_map_by_its_mean_and_has_one_colour_limit(compared):
    explorer, figures = compared
    explorer.set(comparison_scale="per map")
    per_map = explorer.panels.comparison.value
    explorer.controls.comparison_scale.value = "shared"  # the toggle redraws
    assert explorer.panels.comparison.value != per_map
    figure = figures[-1]
    shown = panels(figure)[:4]
    picture = np.asarray(explorer.engine.picture(explorer.settings.image))
    maps = [explorer.result.upsample(picture.shape[:2], relu=True)]
    maps += [explorer._comparisons.get(key(explorer, m)) for m in ORDER[1:4]]
    largest = max(float((heat / heat.mean()).max()) for heat in maps)
    for ax, heat in zip(shown, maps, strict=True):
        np.testing.assert_allclose(ax.images[-1].get_array(), heat / heat.mean(), rtol=1e-5)
        assert ax.images[-1].get_clim() == pytest.approx((0.0, largest))
    bars = [ax for ax in figure.axes if not ax.images]
    assert len(bars) == 1 and bars[0].get_xlabel() == render.SHARED_UNITS
    assert "x the map's mean" in render.SHARED_UNITS
    assert "colour scale shared" in figure.texts[0].get_text()
    explorer.set(comparison_scale="per map")
    assert explorer.panels.comparison.value == per_map


def test_the_comparison_controls_name_their_methods(compared):
    explorer, _ = compared
    assert explorer.controls.compare.description == "Grad-CAM, Grad-CAM++, Layer-CAM"
    assert explorer.controls.comparison_scale.options == ("per map", "shared")
    assert explorer.controls.comparison_scale.layout.display is None  # shown with the row
    children = explorer.widget.children
    assert children.index(explorer.panels.comparison) == 1  # right under the map's row
    with pytest.raises(Exception, match="comparison_scale"):
        explorer.set(comparison_scale="log")


def wide_model() -> nn.Module:
    """The tiny network with 70 channels at layer "2" (3 of Score-CAM's batches), 4 x 4."""
    return tiny_model(channels=70, stride=2)


def wide_explorer(**kwargs) -> ShapCAMExplorer:
    return tiny_explorer(wide_model(), n_samples=2, **kwargs)


def test_scorecam_button_shows_its_cost_for_the_layer(monkeypatch):
    """Cost = Score-CAM's forward passes x the measured time of one pass of BATCH_SIZE
    images; measured when the row is first computed; the label follows the layer."""
    monkeypatch.setattr(explorer_module, "batch_seconds", lambda model, inputs: 2.0)
    explorer = wide_explorer(layer="2")
    # before any batch is timed: BATCH_SIZE times the image's own forward pass
    assert "estimated from one image" in explorer.controls.scorecam.tooltip
    explorer.engine.image_seconds = 0.5
    explorer._scorecam_label("2")
    assert explorer.controls.scorecam.description == f"Score-CAM (~{4 * BATCH_SIZE * 0.5:.0f} s)"
    explorer.set(compare=True)
    assert scorecam_passes(70) == 1 + 3
    assert explorer.controls.scorecam.description == "Score-CAM (~8 s)"
    explorer.set(layer="0")  # 8 channels: one batch
    assert explorer.controls.scorecam.description == "Score-CAM (~4 s)"


def test_scorecam_counts_its_forward_passes_on_the_progress_bar():
    explorer = wide_explorer(layer="2")
    explorer.set(compare=True)
    assert re.fullmatch(r"Score-CAM \((~\d+|<1) s\)", explorer.controls.scorecam.description)
    values, statuses, passes = [], [], []
    explorer.panels.progress.observe(lambda change: values.append(change["new"]), "value")
    explorer.panels.status.observe(lambda change: statuses.append(change["new"]), "value")
    hook = explorer.engine.model.register_forward_pre_hook(lambda *_: passes.append(1))
    try:
        explorer.compute_scorecam()
    finally:
        hook.remove()
    assert explorer.error is None
    expected = 1 + -(-70 // BATCH_SIZE)
    assert len(passes) == expected == explorer.panels.progress.max
    assert max(values) == expected
    for k in range(1, expected + 1):
        assert any(f"computing Score-CAM: {k} of {expected} forward passes" in s for s in statuses)
    assert explorer.panels.progress.description == "sampling"
    assert "done" in explorer.panels.status.value
    figures = []
    draw = render.comparison_figure
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            render,
            "comparison_figure",
            lambda *a, **o: figures.append(draw(*a, **o)) or figures[-1],
        )
        explorer.set(opacity=0.6)
    score = panels(figures[-1])[4]
    assert score.get_title() == "Score-CAM" and len(score.images) == 2


def test_scorecam_stops_when_check_raises():
    """Interruptible: ``check`` raising stops Score-CAM; the hook goes with it."""
    model = wide_model()
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(model, "2", torch.rand(1, 3, 32, 32), 0, "Score-CAM", check)
    assert len(calls) == 2 and not model._forward_pre_hooks
