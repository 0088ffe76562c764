"""The explorer's panels as PNG bytes (matplotlib's Agg canvas, no pyplot state)."""

import io
from functools import lru_cache

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..cam import ShapCAMResult
from ..cam.result import bounded_picture

DPI = 80

#: A game is additive when every standard error is below this fraction of the largest
#: |phi|: each ordering then gives each cell the same contribution (rounding aside).
ADDITIVE_TOLERANCE = 1e-6
ADDITIVE = "standard error 0: this game is additive"


def additive(result: ShapCAMResult) -> bool:
    """Whether every ordering gives each player the same contribution (needs 2 samples)."""
    if np.isnan(result.stderr).all():
        return False
    return bool(np.nanmax(result.stderr) <= ADDITIVE_TOLERANCE * np.abs(result.phi).max())


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def picture_png(picture, title: str = "") -> bytes:
    """The image alone (shown before the first map)."""
    figure = _figure(4, 4)
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.88))
    ax.imshow(np.asarray(picture))
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return _png(figure)


@lru_cache(maxsize=8)
def placeholder_png(
    text: str, wide: bool = False, size: tuple[float, float] | None = None
) -> bytes:
    """A grey panel saying ``text`` (in place of a panel of other settings); size: its
    (width, height) in inches, by default that of a square or (``wide``) a wide panel."""
    figure = _figure(*(size or ((7.2, 3.4) if wide else (4.6, 4))))
    figure.set_facecolor("#eeeeee")
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555555")
    return _png(figure)


def overlay_figure(
    picture, result: ShapCAMResult, *, signed: bool, alpha: float, title: str, limit=None
) -> Figure:
    """Shap-CAM over the image, with a colour bar in the value's units, the player grid
    and a dot on each player whose |phi| exceeds 2 standard errors; the title ends with
    the colour scale (the map's own largest |phi|, or ``limit`` for a fixed scale), a
    caption gives the block size."""
    figure = _figure(4.6, 4)
    ax = figure.add_axes((0.02, 0.08, 0.72, 0.76))
    shown = result.overlay(np.asarray(picture), ax, signed=signed, alpha=alpha, limit=limit)
    low, high = shown.get_clim()
    scale = f"\u00b1{high:.2g}" if signed else f"{low:.2g} to {high:.2g}"
    which = "fixed: largest |phi| of the classes so far" if limit else "per map"
    ax.set_title(f"{title}\ncolour scale {scale} ({which})", fontsize=10)
    marked = _annotate(ax, result)
    b = result.block_size
    caption = f"grid: players of {b} x {b} cells \u00b7 \u2022 |phi| > 2 SE"
    figure.text(0.02, 0.02, f"{caption} ({marked} of {result.phi.size})", fontsize=9)
    bar = figure.colorbar(shown, cax=figure.add_axes((0.77, 0.1, 0.04, 0.7)), format="%.2g")
    bar.set_label(f"phi ({result.value})", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return figure


def _annotate(ax, result: ShapCAMResult) -> int:
    """Thin lines at the players' borders, a dot on each player with |phi| > 2 SE (none
    before 2 samples); returns how many are marked."""
    height, width = ax.images[0].get_array().shape[:2]
    (h, w), b = result.cells, result.block_size
    rows, columns = result.phi.shape
    for k in range(1, rows):
        ax.axhline(k * b * height / h - 0.5, color="white", linewidth=0.5, alpha=0.6)
    for k in range(1, columns):
        ax.axvline(k * b * width / w - 0.5, color="white", linewidth=0.5, alpha=0.6)
    with np.errstate(invalid="ignore"):
        marked = np.abs(result.phi) > 2 * result.stderr
    i, j = np.nonzero(marked)
    centre_y = (i * b + np.minimum(b, h - i * b) / 2) * height / h - 0.5
    centre_x = (j * b + np.minimum(b, w - j * b) / 2) * width / w - 0.5
    ax.scatter(centre_x, centre_y, s=9, c="black", edgecolors="white", linewidths=0.6)
    return int(marked.sum())


def overlay_png(picture, result: ShapCAMResult, **options) -> bytes:
    """``overlay_figure`` as PNG bytes."""
    return _png(overlay_figure(picture, result, **options))


def stderr_figure(result: ShapCAMResult) -> Figure:
    """Standard error of each player, on the player grid, in the value's units; in an
    additive game, a sentence saying so instead of the rounding noise."""
    figure = _figure(4.6, 4)
    if additive(result):
        figure.set_facecolor("#eeeeee")
        figure.text(0.5, 0.55, ADDITIVE, ha="center", va="center", fontsize=11)
        figure.text(
            0.5,
            0.42,
            "every ordering gives each cell\nthe same contribution",
            ha="center",
            va="center",
            fontsize=9,
            color="#555555",
        )
        return figure
    ax = figure.add_axes((0.04, 0.04, 0.7, 0.82))
    stderr = np.nan_to_num(result.stderr, nan=0.0)
    shown = ax.imshow(stderr, cmap="viridis", vmin=0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    missing = " (needs 2 samples)" if np.isnan(result.stderr).all() else ""
    ax.set_title(f"standard error, {result.n_orderings} orderings{missing}", fontsize=10)
    bar = figure.colorbar(shown, cax=figure.add_axes((0.77, 0.08, 0.04, 0.76)), format="%.2g")
    bar.set_label(f"SE ({result.value})", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return figure


def stderr_png(result: ShapCAMResult) -> bytes:
    """``stderr_figure`` as PNG bytes."""
    return _png(stderr_figure(result))


def convergence_figure(history: list[ShapCAMResult], top: int = 5) -> Figure:
    """Left: the estimates of the ``top`` largest cells (+- 2 SE) against orderings, from
    the maps of one explanation after each step. Right: mean and largest standard error
    against orderings, with a 1/sqrt(m) guide; in an additive game, a sentence instead."""
    figure = _figure(7.2, 3.4)
    left = figure.add_axes((0.09, 0.15, 0.38, 0.72))
    right = figure.add_axes((0.6, 0.15, 0.38, 0.72))
    counts = np.array([r.n_orderings for r in history])
    values = np.stack([r.phi.ravel() for r in history])
    errors = np.stack([r.stderr.ravel() for r in history])
    columns = history[-1].phi.shape[1]
    order = np.argsort(-np.abs(values[-1]))[:top]
    for player in order:
        (line,) = left.plot(
            counts, values[:, player], marker=".", label=f"cell {divmod(int(player), columns)}"
        )
        band = np.nan_to_num(errors[:, player], nan=0.0)
        left.fill_between(
            counts,
            values[:, player] - 2 * band,
            values[:, player] + 2 * band,
            color=line.get_color(),
            alpha=0.15,
        )
    unit = history[-1].value
    left.set_xscale("log", base=2)
    left.set_xlabel("orderings m (log scale)", fontsize=9)
    left.set_ylabel(f"phi ({unit})", fontsize=9)
    left.set_title("largest cells (row, col), +- 2 SE", fontsize=10)
    left.legend(fontsize=7, loc="best")
    left.tick_params(labelsize=8)
    has_se = ~np.isnan(errors).all(axis=1)
    if additive(history[-1]):
        right.set_axis_off()
        right.text(0.5, 0.5, ADDITIVE.replace(": ", ":\n"), ha="center", va="center", fontsize=10)
        return figure
    if has_se.any():
        right.plot(counts[has_se], np.nanmean(errors[has_se], axis=1), marker=".", label="mean SE")
        right.plot(counts[has_se], np.nanmax(errors[has_se], axis=1), marker=".", label="max SE")
        first = np.flatnonzero(has_se)[0]
        guide = np.nanmean(errors[first]) * np.sqrt(counts[first] / counts[has_se])
        right.plot(counts[has_se], guide, "k--", linewidth=0.8, label="1/sqrt(m)")
        right.set_yscale("log")
        right.legend(fontsize=7, loc="best")
    right.set_xscale("log", base=2)
    right.set_xlabel("orderings m (log scale)", fontsize=9)
    right.set_ylabel(f"standard error ({unit})", fontsize=9)
    right.set_title("standard error", fontsize=10)
    right.tick_params(labelsize=8)
    return figure


def convergence_png(history: list[ShapCAMResult], top: int = 5) -> bytes:
    """``convergence_figure`` as PNG bytes."""
    return _png(convergence_figure(history, top))


#: The comparison row: (width, height) in inches, 1,000 x 296 px at DPI at most; every
#: panel's image fits a box of PANEL_INCHES (184 x 180 px), its colour bar below it (the
#: row is lower for a wide picture, by as much as its panels are).
COMPARISON_SIZE = (12.5, 3.7)
PANEL_INCHES = (2.3, 2.25)
#: The colour bar labels: pytorch-grad-cam's maps (its ReLU, then min-max to [0, 1]
#: per map), and any map divided by its mean over the picture.
LIBRARY_UNITS = "pytorch-grad-cam's [0, 1] (min-max)"
SHARED_UNITS = "x the map's mean (1 = evidence spread evenly)"


def comparison_figure(
    picture,
    result: ShapCAMResult,
    maps: dict,
    *,
    shared: bool,
    alpha: float,
    title: str = "",
) -> Figure:
    """The comparison row: Shap-CAM's positive part (phi clipped at 0, upsampled to the
    picture as ``result.upsample(shape, relu=True)``), then ``maps`` in their order
    (name -> an (H', W') map as pytorch-grad-cam returns it, in [0, 1], or a note such as
    "press the button" shown in its place), each over the picture (stretched onto it),
    in viridis, in panels of one size; a cell's opacity follows its value (``alpha`` at
    the colour limit).

    shared: every map divided by its mean over the picture (1 = evidence spread evenly),
    one colour scale from 0 to the largest of the maps shown, one colour bar for the row:
    a concentrated map shows brighter peaks. Otherwise each map on its own scale from 0
    to its largest value, with its own colour bar: Shap-CAM in phi's units, the Grad-CAM
    family in pytorch-grad-cam's [0, 1]. The figure says which scale is in use.
    """
    picture = bounded_picture(picture)
    height, width = picture.shape[:2]
    panels = {
        f"Shap-CAM ({result.value}, positive part)": result.upsample((height, width), relu=True),
        **maps,
    }
    units = [f"phi ({result.value})"] + [LIBRARY_UNITS] * len(maps)
    heats = {name: _shown_map(heat, shared) for name, heat in panels.items()}
    computed = [heat for heat in heats.values() if isinstance(heat, np.ndarray)]
    largest = max(float(heat.max()) for heat in computed) if computed else 0.0

    inches_wide, inches_high = COMPARISON_SIZE
    box_wide, box_high = PANEL_INCHES
    picture_high = min(box_high, box_wide * height / width)
    inches_high -= box_high - picture_high
    box_high = picture_high
    figure = _figure(inches_wide, inches_high)
    slot = inches_wide / len(panels)
    for i, (name, heat) in enumerate(heats.items()):
        left = i * slot + (slot - box_wide) / 2
        ax = figure.add_axes(
            (left / inches_wide, 0.62 / inches_high, box_wide / inches_wide, box_high / inches_high)
        )
        ax.imshow(picture)
        ax.set_axis_off()
        if not isinstance(heat, np.ndarray):
            ax.set_title(f"{name}\n{heat}", fontsize=9)
            continue
        ax.set_title(name, fontsize=9)
        limit = (largest if shared else float(heat.max())) or 1.0
        shown = ax.imshow(
            heat,
            cmap="viridis",
            vmin=0.0,
            vmax=limit,
            alpha=alpha * np.clip(heat / limit, 0, 1),
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        )
        if not shared:
            bar = (
                left / inches_wide,
                0.42 / inches_high,
                box_wide / inches_wide,
                0.08 / inches_high,
            )
            _colour_bar(figure, shown, bar, units[i])
    if shared and computed:
        bar = (0.3, 0.42 / inches_high, 0.4, 0.08 / inches_high)
        _colour_bar(
            figure, ScalarMappable(Normalize(0.0, largest or 1.0), "viridis"), bar, SHARED_UNITS
        )
    scale = (
        f"colour scale shared: each map divided by its mean over the picture, one scale "
        f"0 to {largest:.3g}"
        if shared
        else f"colour scale per map: each from 0 to its largest value (Shap-CAM in phi "
        f"({result.value}), the Grad-CAM family in {LIBRARY_UNITS})"
    )
    figure.text(0.5, 1 - 0.08 / inches_high, f"{title}\n{scale}", ha="center", va="top", fontsize=9)
    return figure


def _shown_map(heat, shared: bool):
    """``heat`` as drawn: divided by its mean over the picture when ``shared`` (an
    all-zero map stays zero); a note stays as it is."""
    if not isinstance(heat, np.ndarray):
        return heat
    heat = np.asarray(heat, dtype=np.float64)
    mean = float(heat.mean())
    return heat / mean if shared and mean > 0 else heat


def _colour_bar(figure: Figure, shown, position: tuple, label: str) -> None:
    """A horizontal colour bar at ``position`` (figure fractions) labelled ``label``."""
    bar = figure.colorbar(
        shown, cax=figure.add_axes(position), orientation="horizontal", format="%.2g"
    )
    bar.set_label(label, fontsize=8, labelpad=1)
    bar.ax.tick_params(labelsize=7, pad=1)
    bar.locator = MaxNLocator(4)
    bar.update_ticks()


def comparison_png(picture, result: ShapCAMResult, maps: dict, **options) -> bytes:
    """``comparison_figure`` as PNG bytes."""
    return _png(comparison_figure(picture, result, maps, **options))
