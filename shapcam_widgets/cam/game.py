"""The Shap-CAM game: cells of one layer's activation map are the players."""

import math
import numbers
from collections.abc import Callable

import torch
from torchvision.transforms.functional import gaussian_blur

from ..errors import ShapCAMError
from .layers import SplitNetwork, describe_layers

VALUES = ("prob", "logit")
BASELINES = ("zero", "mean", "blur")
#: ``value`` of a game whose target is a callable on the logits.
CALLABLE_VALUE = "callable"

#: A target: a class index, None (the top-1 class), or a callable mapping one image's
#: logits (K,) to a scalar, such as pytorch-grad-cam's ``ClassifierOutputTarget``.
Target = int | Callable[[torch.Tensor], torch.Tensor] | None
#: pytorch-grad-cam's target classes that are a class index with one of VALUES.
GRAD_CAM_TARGETS = {
    ("pytorch_grad_cam.utils.model_targets", "ClassifierOutputTarget"): "logit",
    ("pytorch_grad_cam.utils.model_targets", "ClassifierOutputSoftmaxTarget"): "prob",
}


def blur_image(image: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with sigma = 5 % of the image's larger side (the "blur" baseline)."""
    sigma = 0.05 * max(image.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(image.shape[-2:]) // 2) - 1)
    return gaussian_blur(image, [kernel, kernel], [sigma, sigma])


def check_options(value: str | None, baseline: str, block_size: int) -> None:
    """Raise ShapCAMError naming the valid choices when an option is unknown (value None:
    the default)."""
    if value is not None and value not in VALUES:
        raise ShapCAMError(f"unknown value {value!r}; valid: {', '.join(VALUES)}")
    if baseline not in BASELINES:
        raise ShapCAMError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
    if not _is_whole(block_size) or block_size < 1:
        raise ShapCAMError(f"block_size must be a whole number >= 1; got {block_size!r}")


def _is_whole(number) -> bool:
    return isinstance(number, numbers.Integral) and not isinstance(number, bool)


def resolve_target(target: Target, value: str | None) -> tuple[Target, str]:
    """(class index, None or callable; value name) for one image's ``target``.

    pytorch-grad-cam's ``ClassifierOutputTarget(k)`` is class k with value "logit" and
    ``ClassifierOutputSoftmaxTarget(k)`` class k with value "prob"; any other callable
    is the game's value itself ("callable"). ``value`` None means "prob" for a class;
    with a callable target it must stay None.
    """
    if target is None or _is_whole(target):
        value = "prob" if value is None else value
        return (None if target is None else int(target)), value
    if not callable(target):
        raise ShapCAMError(
            "target must be a class index, None (the top-1 class) or a callable on the "
            f"logits such as pytorch-grad-cam's ClassifierOutputTarget; got {target!r}"
        )
    if value is not None:
        raise ShapCAMError(
            f"target {target!r} is a callable, so it is the game's value: value={value!r} "
            "conflicts with it. Leave value unset, or give the class index as target"
        )
    kind = (type(target).__module__, type(target).__name__)
    if kind in GRAD_CAM_TARGETS:  # told apart by name: importing pytorch_grad_cam is slow
        return resolve_target(target.category, GRAD_CAM_TARGETS[kind])
    return target, CALLABLE_VALUE


def class_scores(logits: torch.Tensor, target: int, value: str) -> torch.Tensor:
    """The value (B,) of class ``target`` from logits (B x K): "prob" (softmax) or "logit"."""
    if value == "prob":
        return logits.float().softmax(dim=1)[:, target]
    return logits[:, target].float()


def callable_scores(objective: Callable, logits: torch.Tensor) -> torch.Tensor:
    """objective(row) for every row of logits (B x K): (B,), vectorized with torch.vmap
    when ``objective`` allows it, else called row by row."""
    try:
        scores = torch.vmap(objective)(logits)
    except Exception:  # data-dependent code, .item(), ...: one row at a time
        scores = torch.stack([_scalar(objective, row) for row in logits])
    if scores.shape != (len(logits),):
        raise ShapCAMError(
            f"a callable target must map one image's logits ({logits.shape[1]},) to a "
            f"scalar; {objective!r} gave shape {tuple(scores.shape[1:])}"
        )
    return scores


def _scalar(objective: Callable, row: torch.Tensor) -> torch.Tensor:
    score = torch.as_tensor(objective(row), device=row.device)
    if score.numel() != 1:
        raise ShapCAMError(
            f"a callable target must map one image's logits ({len(row)},) to a scalar; "
            f"{objective!r} gave shape {tuple(score.shape)}"
        )
    return score.reshape(()).to(row.dtype)


class LayerGame:
    """v(S) for one image: the target's score with the cells outside S set to a baseline.

    Players are the h x w cells of the layer's activation (each a whole C-vector), or
    ``block_size`` x ``block_size`` blocks of cells, numbered row by row. Calling the game
    with a bool tensor (B, n_players) returns B values (float32, on the network's device).
    Made by ``layer_games`` (one per image); ``target`` is the class index, or None when
    ``objective``, a callable on the logits, is the value.
    """

    def __init__(
        self,
        network: SplitNetwork,
        activation: torch.Tensor,
        context: tuple,
        baseline: torch.Tensor,
        logits: torch.Tensor,
        target: Target,
        *,
        value: str,
        baseline_name: str,
        block_size: int,
        input_size: tuple[int, int],
    ):
        self.network, self.value, self.baseline_name = network, value, baseline_name
        self.activation, self.context, self.baseline = activation, context, baseline
        self.logits, self.input_size = logits, tuple(input_size)
        n_classes = len(logits)
        self.objective = target if callable(target) else None
        if target is None:
            target = int(logits.argmax())
        if self.objective is None and not 0 <= target < n_classes:
            raise ShapCAMError(
                f"class {target} is out of range: valid classes are 0 to {n_classes - 1}"
            )
        self.target = None if self.objective is not None else int(target)
        _, _, h, w = activation.shape
        self.cells = (h, w)
        self.block_size = block_size
        self.blocks = (-(-h // block_size), -(-w // block_size))
        self.n_players = self.blocks[0] * self.blocks[1]
        if self.n_players < 2:
            raise ShapCAMError(_too_few_players(network, self.cells, block_size, input_size))
        rows = torch.arange(h, device=activation.device) // block_size
        cols = torch.arange(w, device=activation.device) // block_size
        self.player_of_cell = (rows[:, None] * self.blocks[1] + cols[None, :]).reshape(-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The target's value (B,) from logits (B x K)."""
        if self.objective is not None:
            return callable_scores(self.objective, logits).float()
        return class_scores(logits, self.target, self.value)

    def masked_activations(self, coalitions: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w): the activation where the coalition's cells are, the baseline elsewhere."""
        present = coalitions.to(self.activation.device)[:, self.player_of_cell]
        present = present.reshape(len(coalitions), 1, *self.cells)
        return torch.where(present, self.activation, self.baseline)

    @torch.inference_mode()
    def __call__(self, coalitions: torch.Tensor) -> torch.Tensor:
        if coalitions.dim() != 2 or coalitions.shape[1] != self.n_players:
            raise ShapCAMError(
                f"coalitions must be a bool tensor (B, {self.n_players}); "
                f"got {tuple(coalitions.shape)}"
            )
        values = self.scores(self.network.tail(self.masked_activations(coalitions), self.context))
        if not torch.isfinite(values).all():
            raise ShapCAMError(
                "the model produced a non-finite output (NaN or inf) on a masked activation; "
                "check the model and the input's range"
            )
        return values


def layer_games(
    network: SplitNetwork,
    images: torch.Tensor,
    targets: list[Target],
    *,
    value: str | None = None,
    baseline: str = "zero",
    block_size: int = 1,
) -> list[LayerGame]:
    """One game per image of ``images`` (N x 3 x H x W), sharing one prefix forward.

    targets: one per image (see ``resolve_target``); value: "prob", "logit" or None.
    """
    check_options(value, baseline, block_size)
    resolved = [resolve_target(target, value) for target in targets]
    with torch.inference_mode():
        activation, context = network.prefix(images)
        if not (isinstance(activation, torch.Tensor) and activation.dim() == 4):
            shape = tuple(getattr(activation, "shape", ()))
            raise ShapCAMError(
                f"layer {network.layer!r} outputs shape {shape}, not N x C x h x w. "
                + describe_layers(network.model, max(images.shape[-2:]))
            )
        if baseline == "zero":
            baselines = torch.zeros_like(activation)
        elif baseline == "mean":
            baselines = activation.mean(dim=(2, 3), keepdim=True).expand_as(activation)
        else:
            baselines = network.prefix(blur_image(images))[0]
        logits = network.tail(activation, context)
    return [
        LayerGame(
            network,
            activation[i : i + 1],
            network.select(context, i),
            baselines[i : i + 1],
            logits[i],
            target,
            value=name,
            baseline_name=baseline,
            block_size=block_size,
            input_size=tuple(images.shape[-2:]),
        )
        for i, (target, name) in enumerate(resolved)
    ]


def _too_few_players(
    network: SplitNetwork, cells: tuple[int, int], block_size: int, input_size
) -> str:
    h, w = cells
    if h * w < 2:
        return (
            f"layer {network.layer!r} has {h} x {w} cell: a game needs at least 2 players. "
            + describe_layers(network.model, max(input_size))
        )
    return (
        f"block_size {block_size} makes the {h} x {w} map of layer {network.layer!r} one "
        f"player; a game needs at least 2: the largest valid block_size is {max(h, w) - 1}"
    )
