"""What a Shap-CAM explanation returns, and how to show it."""

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Overlays draw the image shrunk to at most this many pixels on its longer side.
MAX_OVERLAY_SIDE = 2048


def upsample_grid(grid, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) map resized bilinearly (align_corners=False, as Grad-CAM) to ``size`` (H, W)."""
    grid = torch.as_tensor(np.asarray(grid, dtype=np.float64))[None, None]
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def bounded_picture(image, side: int = MAX_OVERLAY_SIDE) -> np.ndarray:
    """``image`` (array or PIL image) as an array at most ``side`` pixels on its longer side.

    Larger images are shrunk bilinearly, keeping the aspect ratio and the dtype.
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = np.asarray(image)
    height, width = (
        (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
    )
    scale = side / max(height, width)
    if scale >= 1:
        return np.asarray(image)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if isinstance(image, Image.Image):
        return np.asarray(image.resize(size, Image.BILINEAR))
    channels = image.reshape(height, width, -1).astype(np.float32)
    shrunk = [
        np.asarray(Image.fromarray(channels[:, :, c]).resize(size, Image.BILINEAR))
        for c in range(channels.shape[2])
    ]
    shrunk = np.stack(shrunk, axis=2).reshape(size[1], size[0], *image.shape[2:])
    if np.issubdtype(image.dtype, np.integer):
        shrunk = shrunk.round()
    return shrunk.astype(image.dtype)


@dataclass(frozen=True)
class ShapCAMResult:
    """A Shap-CAM map with its uncertainty.

    phi, stderr: (hb, wb) signed Shapley values of the cells (or blocks of cells) and
        their standard errors, in units of the value (probability or logit).
    cells: (h, w) of the layer's activation; block_size cells per block side.
    v_full, v_empty: value of the intact activation and of the all-baseline one;
        phi.sum() == v_full - v_empty.
    n_orderings, n_evaluations: orderings walked (0 when exact) and value evaluations.
    input_size: (H, W) of the network input, the size ``upsample`` returns by default.
    target, value: the class index and "prob" or "logit"; None and "callable" when the
        target was a callable on the logits.
    path: "fast" or "general"; fast_path_reason: why the fast path did not run ("" when
        it did); precision_check: the reduced-precision comparison (None without one).
    """

    phi: np.ndarray
    stderr: np.ndarray
    v_full: float
    v_empty: float
    target: int | None
    layer: str
    value: str
    baseline: str
    method: str
    n_orderings: int
    n_evaluations: int
    seed: int
    block_size: int
    cells: tuple[int, int]
    input_size: tuple[int, int]
    path: str
    seconds: float
    fast_path_reason: str = ""
    precision_check: dict | None = None

    def cell_map(self) -> np.ndarray:
        """(h, w) map: each cell carries the value of its block."""
        b = self.block_size
        h, w = self.cells
        return np.kron(self.phi, np.ones((b, b)))[:h, :w]

    def upsample(self, size: tuple[int, int] | None = None, *, relu: bool = False) -> np.ndarray:
        """The map resized bilinearly to ``size`` (H, W; default: the input size).

        relu: keep only positive evidence (a display choice; phi stays signed).
        """
        resized = upsample_grid(self.cell_map(), size or self.input_size)
        return np.maximum(resized, 0) if relu else resized

    def overlay(
        self,
        image,
        ax=None,
        *,
        signed: bool = True,
        alpha: float = 0.5,
        limit: float | None = None,
    ):
        """Draw the map over ``image`` (H x W x 3 array or PIL image) on a matplotlib axis.

        signed: diverging colours centred on zero (red adds to the score, blue takes
        away); otherwise positive evidence only, on the sequential "viridis" colour map.
        alpha: the opacity of a cell at the colour limit; a cell's opacity is
        ``alpha * min(|phi| / limit, 1)``, so the picture stays visible where the map is
        near zero. limit: the colour limit in the value's units (colours from -limit or 0
        to limit), e.g. one limit shared by several maps; default: the map's largest |phi|.
        Returns the image of the map, for a colour bar (``figure.colorbar(shown, ax=ax)``).
        Images larger than ``MAX_OVERLAY_SIDE`` pixels are drawn shrunk to it (same aspect
        ratio): axis coordinates are then those of the shrunk image.
        """
        import matplotlib.pyplot as plt

        picture = bounded_picture(image)
        heat = self.upsample(picture.shape[:2], relu=not signed)
        ax = ax if ax is not None else plt.gca()
        ax.imshow(picture)
        limit = float(limit or np.abs(heat).max()) or 1.0
        opacity = alpha * np.clip(np.abs(heat) / limit, 0, 1)
        if signed:
            shown = ax.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=opacity)
        else:
            shown = ax.imshow(heat, cmap="viridis", vmin=0, vmax=limit, alpha=opacity)
        ax.set_axis_off()
        return shown

    def to_dict(self) -> dict:
        """A JSON-ready dict; phi and stderr as nested lists (rows of numbers)."""
        record = asdict(self)
        record["phi"] = self.phi.tolist()
        record["stderr"] = [
            [None if np.isnan(x) else x for x in row] for row in self.stderr.tolist()
        ]
        record["cells"], record["input_size"] = list(self.cells), list(self.input_size)
        return record
