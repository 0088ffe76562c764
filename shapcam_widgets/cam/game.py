"""The Shap-CAM game: cells of one layer's activation map are the players."""

import math

import torch
from torchvision.transforms.functional import gaussian_blur

from ..errors import ShapCAMError
from .layers import SplitNetwork, describe_layers

VALUES = ("prob", "logit")
BASELINES = ("zero", "mean", "blur")


def blur_image(image: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with sigma = 5 % of the image's larger side (the "blur" baseline)."""
    sigma = 0.05 * max(image.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(image.shape[-2:]) // 2) - 1)
    return gaussian_blur(image, [kernel, kernel], [sigma, sigma])


def check_options(value: str, baseline: str, block_size: int) -> None:
    """Raise ShapCAMError naming the valid choices when an option is unknown."""
    if value not in VALUES:
        raise ShapCAMError(f"unknown value {value!r}; valid: {', '.join(VALUES)}")
    if baseline not in BASELINES:
        raise ShapCAMError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
    if block_size < 1:
        raise ShapCAMError(f"block_size must be >= 1; got {block_size}")


class LayerGame:
    """v(S) for one image: the target's score with the cells outside S set to a baseline.

    Players are the h x w cells of the layer's activation (each a whole C-vector), or
    ``block_size`` x ``block_size`` blocks of cells, numbered row by row. Calling the game
    with a bool tensor (B, n_players) returns B values (float32, on the network's device).
    """

    def __init__(
        self,
        network: SplitNetwork,
        image: torch.Tensor,
        target: int | None = None,
        *,
        value: str = "prob",
        baseline: str = "zero",
        block_size: int = 1,
    ):
        check_options(value, baseline, block_size)
        self.network, self.value, self.baseline_name = network, value, baseline
        self.input_size = tuple(image.shape[-2:])
        with torch.inference_mode():
            activation, self.context = network.prefix(image)
            if not (isinstance(activation, torch.Tensor) and activation.dim() == 4):
                shape = tuple(getattr(activation, "shape", ()))
                raise ShapCAMError(
                    f"layer {network.layer!r} outputs shape {shape}, not N x C x h x w. "
                    + describe_layers(network.model, max(image.shape[-2:]))
                )
            self.activation = activation
            self.baseline = self._baseline(image, baseline)
            self.logits = network.tail(activation, self.context)[0]
        n_classes = len(self.logits)
        if target is None:
            target = int(self.logits.argmax())
        if not 0 <= target < n_classes:
            raise ShapCAMError(
                f"class {target} is out of range: valid classes are 0 to {n_classes - 1}"
            )
        self.target = int(target)
        _, _, h, w = activation.shape
        self.cells = (h, w)
        self.block_size = block_size
        self.blocks = (-(-h // block_size), -(-w // block_size))
        rows = torch.arange(h, device=activation.device) // block_size
        cols = torch.arange(w, device=activation.device) // block_size
        self.player_of_cell = (rows[:, None] * self.blocks[1] + cols[None, :]).reshape(-1)
        self.n_players = self.blocks[0] * self.blocks[1]

    def _baseline(self, image: torch.Tensor, baseline: str) -> torch.Tensor:
        if baseline == "zero":
            return torch.zeros_like(self.activation)
        if baseline == "mean":
            return self.activation.mean(dim=(2, 3), keepdim=True).expand_as(self.activation)
        return self.network.prefix(blur_image(image))[0]

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The target's value (B,) from logits (B x K)."""
        if self.value == "prob":
            return logits.float().softmax(dim=1)[:, self.target]
        return logits[:, self.target].float()

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
