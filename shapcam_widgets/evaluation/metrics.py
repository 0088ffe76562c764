"""Faithfulness and localization metrics for saliency maps (the book's Method notes, "The
evaluation metrics", gives the definitions with their sources).

All functions take one image ``x`` (1 x 3 x H x W, in the model's normalized space), a
saliency map (H x W, already scaled to [0, 1] by ``scale_map``) and a target class, and
score with the target's softmax probability.

- Average Drop % and Increase in Confidence (Chattopadhyay et al. 2018): O is the score
  of ``x * map``, the normalized input multiplied point-wise by the map, exactly as
  pytorch-grad-cam's ``CamMultImageConfidenceChange`` does (the tests check equality).
  Per image: drop = max(0, Y - O) / Y * 100, increase = 100 if O > Y else 0; their means
  are Average Drop and Increase in Confidence, both in 0-100.
- Deletion / Insertion (Petsiuk et al. 2018, RISE): pixels sorted by the map (highest
  first, ties in raster order); ``step`` pixels per step are set to 0 in normalized space
  (deletion) or copied from ``x`` onto a blurred copy of ``x`` (insertion, Gaussian blur
  with kernel 11 and sigma 5 as in RISE's code). The curve holds the probability after
  0, 1, ..., ceil(H W / step) steps; its AUC is the trapezoid rule over the fraction of
  pixels changed (0 to 1).
- Energy-based pointing game (Wang et al. 2020, Score-CAM): the map's sum inside the
  union of the ground-truth boxes over its sum over the image (0 for an all-zero map).
  Pointing game (Zhang et al. 2016): 1 if the map's maximum (first one in raster order)
  lies in a box, else 0; no tolerance margin.
"""

import math

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from ..cam.game import class_scores

RISE_BLUR_KERNEL, RISE_BLUR_SIGMA = 11, 5.0


def scale_map(saliency) -> np.ndarray:
    """ReLU then min-max to [0, 1] (float32); a constant map becomes all zeros.

    Same rule as pytorch-grad-cam's ``scale_cam_image`` (without its resize).
    """
    saliency = np.maximum(np.asarray(saliency, dtype=np.float64), 0)
    saliency = saliency - saliency.min()
    top = saliency.max()
    if not np.isfinite(top) or top <= 0:
        return np.zeros(saliency.shape, dtype=np.float32)
    return (saliency / top).astype(np.float32)


def probabilities(model, images: torch.Tensor, target: int, batch_size: int = 32) -> np.ndarray:
    """Softmax probability of ``target`` for each image of a batch (float64 array): the
    game's value "prob" (``cam.game.class_scores``), computed in float32."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size])
            out.append(class_scores(logits, target, "prob").double().cpu())
    return torch.cat(out).numpy()


def confidence_change(model, x: torch.Tensor, saliency: np.ndarray, target: int):
    """(Y, O): target probability of ``x`` and of ``x`` multiplied by the map."""
    mask = torch.from_numpy(np.asarray(saliency, dtype=np.float32)).to(x.device)
    scores = probabilities(model, torch.cat([x, x * mask]), target)
    return float(scores[0]), float(scores[1])


def average_drop(y: float, o: float) -> float:
    """Per-image drop in %: max(0, Y - O) / Y * 100."""
    return max(0.0, y - o) / y * 100.0 if y > 0 else 0.0


def increase(y: float, o: float) -> float:
    """Per-image increase in %: 100 if O > Y else 0 (its mean is a share of images)."""
    return 100.0 if o > y else 0.0


def rise_blur(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion substrate: Gaussian blur, kernel 11, sigma 5."""
    kernel = min(RISE_BLUR_KERNEL, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    return gaussian_blur(x, [kernel, kernel], [RISE_BLUR_SIGMA, RISE_BLUR_SIGMA])


def default_step(x: torch.Tensor) -> int:
    """8 rows' worth of pixels per step (1,792 at 224 x 224: 28 steps)."""
    return 8 * x.shape[-1]


def perturbation_curve(
    model,
    start: torch.Tensor,
    finish: torch.Tensor,
    saliency: np.ndarray,
    target: int,
    step: int,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """(fractions, probabilities): pixels go from ``start`` to ``finish`` in map order.

    After k steps the ``k * step`` highest-ranked pixels hold ``finish``'s values.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1; got {step}")
    height, width = start.shape[-2:]
    n_pixels = height * width
    order = torch.from_numpy(np.asarray(saliency, dtype=np.float64).reshape(-1))
    order = torch.argsort(-order, stable=True).to(start.device)
    n_steps = math.ceil(n_pixels / step)
    counts = [min(k * step, n_pixels) for k in range(n_steps + 1)]
    rank = torch.empty(n_pixels, dtype=torch.long, device=start.device)
    rank[order] = torch.arange(n_pixels, device=start.device)
    rank = rank.reshape(1, 1, height, width)
    scores = []
    for first in range(0, len(counts), batch_size):
        chunk = torch.tensor(counts[first : first + batch_size], device=start.device)
        changed = rank < chunk.reshape(-1, 1, 1, 1)
        images = torch.where(changed, finish, start)
        scores.append(probabilities(model, images, target, batch_size))
    return np.array(counts, dtype=np.float64) / n_pixels, np.concatenate(scores)


def deletion_curve(model, x, saliency, target, step=None, batch_size: int = 32):
    """RISE deletion: most salient pixels first set to 0 (normalized space)."""
    step = step or default_step(x)
    return perturbation_curve(model, x, torch.zeros_like(x), saliency, target, step, batch_size)


def insertion_curve(model, x, saliency, target, step=None, substrate=None, batch_size: int = 32):
    """RISE insertion: most salient pixels first copied from ``x`` onto ``substrate``
    (default: ``rise_blur(x)``)."""
    step = step or default_step(x)
    substrate = rise_blur(x) if substrate is None else substrate
    return perturbation_curve(model, substrate, x, saliency, target, step, batch_size)


def auc(fractions: np.ndarray, scores: np.ndarray) -> float:
    """Area under the curve by the trapezoid rule over the fraction axis (0 to 1)."""
    fractions, scores = np.asarray(fractions), np.asarray(scores)
    return float(np.sum((scores[1:] + scores[:-1]) * np.diff(fractions)) / 2)


def box_mask(boxes, image_size: tuple[int, int], map_size: tuple[int, int]) -> np.ndarray:
    """Union of boxes as a bool (h, w) mask on the map's grid.

    boxes: (x1, y1, x2, y2) in the pixel coordinates of the stored image, whose size is
    ``image_size`` = (width, height). The model input is the whole image resized (no
    crop), so a map pixel (r, c) of an (h, w) map covers image coordinates scaled by
    width / w and height / h; it is in a box when its centre, (c + 0.5) * width / w and
    (r + 0.5) * height / h, lies in [x1, x2] x [y1, y2]. For the shared 227 x 227 images
    and 224 x 224 maps this is the box scaled by 224 / 227.
    """
    width, height = image_size
    h, w = map_size
    cx = (np.arange(w) + 0.5) * width / w
    cy = (np.arange(h) + 0.5) * height / h
    mask = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        mask |= ((cy >= y1) & (cy <= y2))[:, None] & ((cx >= x1) & (cx <= x2))[None, :]
    return mask


def energy_pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's sum inside the mask (0 for an all-zero map)."""
    saliency = np.asarray(saliency, dtype=np.float64)
    total = saliency.sum()
    return float(saliency[mask].sum() / total) if total > 0 else 0.0


def pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if the map's maximum (first in raster order) lies in the mask, else 0.0."""
    return float(mask.reshape(-1)[int(np.argmax(np.asarray(saliency).reshape(-1)))])


def bootstrap_ci(
    values, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling images with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // len(values))
    for first in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - first)
        picks = rng.integers(0, len(values), (size, len(values)))
        means[first : first + size] = values[picks].mean(1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)
