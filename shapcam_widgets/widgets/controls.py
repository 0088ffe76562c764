"""The explorer's widgets and their layout (no behaviour here)."""

from dataclasses import dataclass, fields

import ipywidgets as w

from ..cam import BASELINES, VALUES

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
    scorecam: w.Button
    stop: w.Button

    def settings_widgets(self) -> list:
        """The widgets whose value changes what is computed or shown."""
        skip = {"upload", "search", "scorecam", "stop"}
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
        image=w.Dropdown(description="image", options=images, style=WIDE),
        upload=w.FileUpload(accept="image/*", multiple=False, description="upload"),
        layer=w.Dropdown(
            description="layer", options=layers, style=WIDE, layout=w.Layout(**FULL_WIDTH)
        ),
        block=w.Dropdown(
            description="cells/player",
            options=[("auto (<= 64 players)", 0)] + [(f"{b} x {b}", b) for b in (1, 2, 4, 7, 8)],
            value=0,
            style=WIDE,
        ),
        target=w.Dropdown(
            description="class", options=[], style=WIDE, layout=w.Layout(**FULL_WIDTH)
        ),
        search=w.Combobox(
            description="search",
            placeholder=f"any of {len(class_names)} classes",
            options=class_names,
            ensure_option=True,
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
        compare=w.Checkbox(description="Grad-CAM, Grad-CAM++", value=False, indent=False),
        scorecam=w.Button(
            description="Score-CAM (slow)",
            tooltip="about 15 s on 2 CPU cores",
            layout=w.Layout(width="150px"),
        ),
        stop=w.Button(
            description="stop",
            tooltip="stop sampling; the map drawn so far stays",
            layout=w.Layout(width="80px"),
        ),
    )
    for name in ("samples", "target", "image", "upload", "layer", "seed", "search", "stop"):
        getattr(controls, name).add_class(f"shapcam-{name}")
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
            format="png", layout=w.Layout(width="768px", max_width=FIT, display="none")
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
            w.HBox([controls.compare, controls.scorecam], layout=w.Layout(**WRAP)),
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
        ],
        layout=w.Layout(max_width="100%"),
    )
    # narrow pages (the book, a phone) stack the panels
    return w.VBox(
        [
            w.HBox([column, shown], layout=w.Layout(**WRAP)),
            w.HBox([panels.stderr, panels.convergence], layout=w.Layout(**WRAP)),
            panels.comparison,
        ],
        layout=w.Layout(max_width="100%"),
    )
