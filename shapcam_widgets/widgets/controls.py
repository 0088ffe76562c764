"""The explorer's widgets and their layout (no behaviour here)."""

from dataclasses import dataclass, fields

import ipywidgets as w

from ..cam import BASELINES, VALUES
from .comparisons import FAST, SLOW

#: Sample counts on the log slider: 1, 2, 4, ..., 4096 orderings.
SAMPLE_STEPS = tuple(2**k for k in range(13))
WIDE = {"description_width": "80px"}
#: Choices with long labels ("blocks.4 · 112x14x14 (196 cells)") span the controls column.
#: Every fixed width shrinks to the page, down to a 360 px phone (FIT: the width of the
#: box less the 2 px margins of a widget).
FIT = "calc(100% - 4px)"
FULL_WIDTH = {"width": "410px", "max_width": FIT}
PANEL = {"width": "368px", "max_width": FIT, "height": "320px", "object_fit": "contain"}
WRAP = {"flex_flow": "row wrap", "max_width": "100%"}


@dataclass
class Controls:
    image_filter: w.Text
    image_count: w.HTML
    image: w.Dropdown
    upload: w.FileUpload
    layer: w.Dropdown
    block: w.Dropdown
    target: w.Dropdown
    search: w.Combobox
    samples: w.SelectionSlider
    seed: w.BoundedIntText
    value: w.ToggleButtons
    baseline: w.ToggleButtons
    display: w.ToggleButtons
    scale: w.ToggleButtons
    opacity: w.FloatSlider
    compare: w.Checkbox
    comparison_scale: w.ToggleButtons
    scorecam: w.Button
    stop: w.Button

    def settings_widgets(self) -> list:
        """The widgets whose value changes what is computed or shown."""
        skip = {"image_filter", "image_count", "upload", "search", "scorecam", "stop"}
        return [getattr(self, f.name) for f in fields(self) if f.name not in skip]


@dataclass
class Panels:
    overlay: w.Image
    stderr: w.Image
    convergence: w.Image
    comparison: w.Image
    efficiency: w.HTML
    status: w.HTML
    progress: w.IntProgress
    error: w.HTML


def build_controls(
    images: list[str], layers: list[tuple[str, str]], class_names: list[str], n_samples: int
) -> Controls:
    def toggles(description, options, value):
        return w.ToggleButtons(
            description=description,
            options=options,
            value=value,
            style={**WIDE, "button_width": "78px"},
        )

    controls = Controls(
        image_filter=w.Text(
            description="filter",
            placeholder="images by name or class",
            continuous_update=True,
            style=WIDE,
            layout=w.Layout(width="300px", max_width=FIT),
        ),
        image_count=w.HTML(f"{len(images):,} images"),
        image=w.Dropdown(description="image", options=images, style=WIDE),
        upload=w.FileUpload(accept="image/*", multiple=False, description="upload"),
        layer=w.Dropdown(
            description="layer", options=layers, style=WIDE, layout=w.Layout(**FULL_WIDTH)
        ),
        block=w.Dropdown(  # the explorer labels the choices for the layer shown
            description="cells/player",
            options=[("auto", 0)],
            value=0,
            style=WIDE,
            layout=w.Layout(**FULL_WIDTH),
        ),
        target=w.Dropdown(
            description="class", options=[], style=WIDE, layout=w.Layout(**FULL_WIDTH)
        ),
        # every keystroke reaches the kernel: a class picked from the list is chosen at
        # once, Enter on part of a name chooses the best match
        search=w.Combobox(
            description="search",
            placeholder=f"part of any of {len(class_names):,} classes, Enter",
            options=class_names,
            ensure_option=False,
            continuous_update=True,
            style=WIDE,
            layout=w.Layout(**FULL_WIDTH),
        ),
        samples=w.SelectionSlider(
            description="orderings",
            options=SAMPLE_STEPS,
            value=n_samples,
            continuous_update=False,
            style=WIDE,
        ),
        seed=w.BoundedIntText(description="seed", value=0, min=0, max=2**31 - 1, style=WIDE),
        value=toggles("value", list(VALUES), VALUES[0]),
        baseline=toggles("baseline", list(BASELINES), BASELINES[0]),
        display=toggles("display", [("signed", "signed"), ("positive", "positive")], "signed"),
        scale=toggles("scale", [("per map", "per map"), ("fixed", "fixed")], "per map"),
        opacity=w.FloatSlider(
            description="opacity",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            continuous_update=False,
            style=WIDE,
        ),
        compare=w.Checkbox(
            description=", ".join(FAST),
            value=False,
            indent=False,
            layout=w.Layout(width="auto"),
        ),
        comparison_scale=w.ToggleButtons(
            description="comparison scale",
            options=["per map", "shared"],
            value="per map",
            tooltips=[
                "each map from 0 to its largest value, with its own colour bar",
                "each map divided by its mean over the picture, one colour bar",
            ],
            style={"description_width": "120px", "button_width": "78px"},
            layout=w.Layout(display="none"),
        ),
        scorecam=w.Button(
            description=f"{SLOW[0]} (slow)",
            tooltip="one forward pass per channel of the layer: its cost shows here once "
            "the comparison row has been computed",
            layout=w.Layout(width="150px"),
        ),
        stop=w.Button(
            description="stop",
            tooltip="stop sampling; the map drawn so far stays",
            layout=w.Layout(width="80px"),
        ),
    )
    for field in fields(controls):  # CSS classes for the browser tests: shapcam-image-filter
        getattr(controls, field.name).add_class(f"shapcam-{field.name.replace('_', '-')}")
    return controls


def build_panels() -> Panels:
    panels = Panels(
        overlay=w.Image(format="png", layout=w.Layout(**PANEL)),
        stderr=w.Image(format="png", layout=w.Layout(**PANEL)),
        convergence=w.Image(
            format="png",
            layout=w.Layout(width="576px", max_width=FIT, height="272px", object_fit="contain"),
        ),
        comparison=w.Image(
            format="png", layout=w.Layout(width="1000px", max_width=FIT, display="none")
        ),
        efficiency=w.HTML(),
        status=w.HTML(),
        progress=w.IntProgress(value=0, min=0, max=1, description="sampling", style=WIDE),
        error=w.HTML(layout=w.Layout(display="none")),
    )
    for name in ("overlay", "stderr", "convergence", "comparison", "efficiency", "status"):
        getattr(panels, name).add_class(f"shapcam-{name}")
    return panels


def layout(controls: Controls, panels: Panels) -> w.VBox:
    column = w.VBox(
        [
            w.HBox([controls.image_filter, controls.image_count], layout=w.Layout(**WRAP)),
            w.HBox([controls.image, controls.upload], layout=w.Layout(**WRAP)),
            controls.layer,
            controls.block,
            controls.target,
            controls.search,
            controls.samples,
            controls.seed,
            controls.value,
            controls.baseline,
            controls.display,
            controls.scale,
            controls.opacity,
        ],
        layout=w.Layout(width="420px", max_width="100%"),
    )
    # errors (a failed upload, a failed computation) show above the map, in view
    shown = w.VBox(
        [
            panels.error,
            panels.overlay,
            panels.status,
            w.HBox([panels.progress, controls.stop], layout=w.Layout(**WRAP)),
            panels.efficiency,
            # the comparison row's controls, beside the map's shorter column
            w.HBox([controls.compare, controls.scorecam], layout=w.Layout(**WRAP)),
            controls.comparison_scale,
        ],
        layout=w.Layout(max_width="100%"),
    )
    # narrow pages (the book, a phone) stack the panels; the comparison row sits right
    # under the map, so that both are on screen together (1100 x 900 px)
    return w.VBox(
        [
            w.HBox([column, shown], layout=w.Layout(**WRAP)),
            panels.comparison,
            w.HBox([panels.stderr, panels.convergence], layout=w.Layout(**WRAP)),
        ],
        layout=w.Layout(max_width="100%"),
    )
