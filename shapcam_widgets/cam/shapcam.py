"""Shap-CAM (Zheng et al., ECCV 2022): Shapley values of a layer's spatial cells."""

import time

import torch
from torch import nn

from ..errors import ShapCAMError
from ..games import MAX_EXACT_PLAYERS, PermutationSampler, exact_shapley
from ..games.sampling import Progress
from .game import LayerGame
from .layers import SplitNetwork, resolve_layer
from .result import ShapCAMResult

DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of extra memory per batch of coalitions


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" means CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ShapCAMError(f"unknown device {device!r}; valid: auto, cpu, cuda") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ShapCAMError("device 'cuda' was asked for, but no CUDA GPU is available")
    return chosen


class ShapCAM:
    """Shap-CAM explainer for one layer of a CNN classifier.

    model: a torchvision or timm classifier (moved to ``device`` and set to eval mode).
    layer: a ``named_modules()`` name or the module itself; its output is N x C x h x w.
    value: "prob" (target's softmax probability) or "logit".
    baseline: what absent cells become: "zero", "mean" (per-channel spatial mean) or
        "blur" (the activation of a blurred copy of the input).
    block_size: group cells into block_size x block_size players (fewer players).
    memory_budget: bytes of extra memory one batch of coalitions may use.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        value: str = "prob",
        baseline: str = "zero",
        block_size: int = 1,
        device: str | torch.device = "auto",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ):
        self.device = choose_device(device)
        self.model = model.to(self.device).eval()
        self.layer = resolve_layer(self.model, layer)
        self.network = SplitNetwork(self.model, self.layer)
        self.value, self.baseline, self.block_size = value, baseline, block_size
        self.memory_budget = memory_budget

    def game(self, inputs: torch.Tensor, target: int | None = None) -> LayerGame:
        """The cooperative game for one image (1 x 3 x H x W or 3 x H x W)."""
        return LayerGame(
            self.network,
            self._image(inputs),
            target,
            value=self.value,
            baseline=self.baseline,
            block_size=self.block_size,
        )

    def attribute(
        self,
        inputs: torch.Tensor,
        target: int | None = None,
        *,
        n_samples: int = 128,
        seed: int = 0,
        antithetic: bool = True,
        exact: bool = False,
        tol: float | None = None,
        progress: Progress | None = None,
    ) -> ShapCAMResult:
        """Explain ``target`` (default: the top-1 class) for one image.

        n_samples: orderings to sample (rounded up to an even number when antithetic).
        exact: enumerate all 2^n coalitions instead (n <= 20 players).
        tol: stop sampling early once every standard error is below it.
        progress: called as progress(done, total) while sampling.
        """
        if n_samples < 1:
            raise ShapCAMError(f"n_samples must be >= 1; got {n_samples}")
        started = time.perf_counter()
        game = self.game(inputs, target)
        batch_size = self.batch_size(game)
        if exact:
            if game.n_players > MAX_EXACT_PLAYERS:
                raise ShapCAMError(
                    f"exact Shapley values need at most {MAX_EXACT_PLAYERS} players; this layer "
                    f"has {game.n_players} ({game.blocks[0]}x{game.blocks[1]}): sample instead, or "
                    "choose a block_size that leaves at most 20 blocks"
                )
            estimate = exact_shapley(
                game, game.n_players, batch_size=batch_size, device=self.device
            )
        else:
            sampler = PermutationSampler(
                game,
                game.n_players,
                antithetic=antithetic,
                seed=seed,
                batch_size=batch_size,
                device=self.device,
            )
            estimate = sampler.run(n_samples, tol=tol, progress=progress)
        return self.result(game, estimate, seed=seed, seconds=time.perf_counter() - started)

    def result(self, game: LayerGame, estimate, *, seed: int, seconds: float) -> ShapCAMResult:
        """Package a ``ShapleyEstimate`` of ``game`` as a ``ShapCAMResult``."""
        return ShapCAMResult(
            phi=estimate.values.reshape(game.blocks).numpy(),
            stderr=estimate.stderr.reshape(game.blocks).numpy(),
            v_full=estimate.v_full,
            v_empty=estimate.v_empty,
            target=game.target,
            layer=self.layer,
            value=self.value,
            baseline=self.baseline,
            method=estimate.method,
            n_orderings=estimate.n_orderings,
            n_evaluations=estimate.n_evaluations,
            seed=seed,
            block_size=self.block_size,
            cells=game.cells,
            input_size=tuple(game.input_size),
            path=self.network.path,
            seconds=seconds,
        )

    def batch_size(self, game: LayerGame) -> int:
        """Coalitions per batch such that the tail's outputs fit ``memory_budget``."""
        per_sample = _tail_bytes_per_sample(game)
        return int(max(1, min(8192, self.memory_budget // max(per_sample, 1))))

    def _image(self, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise ShapCAMError(f"inputs must be a torch.Tensor; got {type(inputs).__name__}")
        if inputs.dim() == 3:
            inputs = inputs[None]
        if inputs.dim() != 4 or inputs.shape[0] != 1 or inputs.shape[1] != 3:
            raise ShapCAMError(
                f"inputs must be one image of shape 3 x H x W or 1 x 3 x H x W; "
                f"got {tuple(inputs.shape)}"
            )
        return inputs.to(self.device, torch.float32)


def _tail_bytes_per_sample(game: LayerGame) -> int:
    """Bytes of all module outputs when the tail runs on one coalition (an upper bound)."""
    total = [game.activation.numel() * game.activation.element_size() * 2]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total.append(output.numel() * output.element_size())

    hooks = [m.register_forward_hook(count) for m in game.network.model.modules()]
    try:
        game(torch.ones(1, game.n_players, dtype=torch.bool))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(total)
