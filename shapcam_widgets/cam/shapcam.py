"""Shap-CAM (Zheng et al., ECCV 2022): Shapley values of a layer's spatial cells."""

import time
import warnings

import torch
from torch import nn

from ..errors import ShapCAMError
from ..games import MAX_EXACT_PLAYERS, PermutationSampler, exact_shapley
from ..games.sampling import Progress
from .fastpath import FastLayerGame, fast_batch_size, find_position_wise_head
from .game import LayerGame, check_options
from .layers import SplitNetwork, resolve_layer
from .result import ShapCAMResult

DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of extra memory per batch of coalitions
#: On the CPU, batches whose tail outputs stay near cache size run fastest (measured on
#: EfficientNet-Lite0: 0.4 ms per coalition at 16 per batch, 0.7 ms at 512).
CPU_BATCH_BYTES = 16 * 2**20
CPU_MIN_BATCH = 8  # below this, per-call overhead dominates (1.4x slower at 1 per call)
PATHS = ("auto", "fast", "general")
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: largest |reduced - float32| difference of values accepted (times max(1, |value|)).
PRECISION_TOL = 1e-2


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
    path: "auto" uses the structured fast path when the network after ``layer`` is
        position-wise up to a global average pool and a linear classifier (METHOD.md
        section 3), the general path otherwise; "fast" insists on it (error if the
        structure is missing), "general" always runs the network's tail per coalition.
        ``fast_path_reason`` says why the fast path is unavailable ("" when it is).
    precision: "float32", or "bfloat16" / "float16" to run the general path's tail under
        autocast (meant for GPUs). Each image first compares a few coalitions against
        float32 and falls back to float32, with a warning, when they differ by more than
        ``PRECISION_TOL``; ``precision_check`` records the last comparison. The fast path
        ignores it: it works in float64 from per-cell logits computed once.
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
        path: str = "auto",
        precision: str = "float32",
    ):
        if path not in PATHS:
            raise ShapCAMError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
        if precision not in PRECISIONS:
            raise ShapCAMError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        check_options(value, baseline, block_size)
        self.device = choose_device(device)
        self.model = model.to(self.device).eval()
        self.layer = resolve_layer(self.model, layer)
        self.network = SplitNetwork(self.model, self.layer)
        self.value, self.baseline, self.block_size = value, baseline, block_size
        self.memory_budget = memory_budget
        self.path, self.precision = path, precision
        self.precision_check: dict | None = None
        self.head, self.fast_path_reason = find_position_wise_head(self.network)
        if path == "fast" and self.head is None:
            raise ShapCAMError(f"no fast path for layer {self.layer!r}: {self.fast_path_reason}")

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
        if exact:
            value_fn, batch_size, path = self.value_function(game)
            if game.n_players > MAX_EXACT_PLAYERS:
                raise ShapCAMError(
                    f"exact Shapley values need at most {MAX_EXACT_PLAYERS} players; this layer "
                    f"has {game.n_players} ({game.blocks[0]}x{game.blocks[1]}): sample instead, or "
                    "choose a block_size that leaves at most 20 blocks"
                )
            estimate = exact_shapley(
                value_fn, game.n_players, batch_size=batch_size, device=self.device
            )
        else:
            sampler, path = self.sampler(game, seed=seed, antithetic=antithetic)
            estimate = sampler.run(n_samples, tol=tol, progress=progress)
        seconds = time.perf_counter() - started
        return self.result(game, estimate, seed=seed, seconds=seconds, path=path)

    def sampler(
        self, game: LayerGame, *, seed: int = 0, antithetic: bool = True
    ) -> tuple[PermutationSampler, str]:
        """(a PermutationSampler of ``game`` on the best path, "fast" or "general").

        ``sampler.run(m)`` adds m orderings to the earlier ones: the anytime use.
        """
        value_fn, batch_size, path = self.value_function(game)
        sampler = PermutationSampler(
            value_fn,
            game.n_players,
            antithetic=antithetic,
            seed=seed,
            batch_size=batch_size,
            device=self.device,
        )
        return sampler, path

    def value_function(self, game: LayerGame) -> tuple:
        """(value function, coalitions per call, "fast" or "general") for ``game``.

        The fast value function is checked against the network's tail on a few
        coalitions first; under path="auto" a failed check falls back to the general path.
        """
        if self.head is not None and self.path != "general":
            try:
                fast = FastLayerGame(game, self.head)
                fast.check()
            except ShapCAMError as error:
                if self.path == "fast":
                    raise
                self.fast_path_reason = str(error)
            else:
                self.fast_path_reason = ""
                return fast, fast_batch_size(fast, self.memory_budget), "fast"
        value_fn = game
        if self.precision != "float32":
            value_fn = self._reduced_precision(game)
        return value_fn, self.batch_size(game), "general"

    def _reduced_precision(self, game: LayerGame):
        """``game`` under autocast, or ``game`` itself when it disagrees with float32."""
        dtype = PRECISIONS[self.precision]

        def reduced(coalitions: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=dtype):
                return game(coalitions).float()

        generator = torch.Generator().manual_seed(0)
        coalitions = torch.rand(16, game.n_players, generator=generator) < 0.5
        coalitions[0], coalitions[-1] = False, True  # the empty and the full coalition
        exact = game(coalitions).double().cpu()
        gap = float((reduced(coalitions).double().cpu() - exact).abs().max())
        limit = PRECISION_TOL * max(1.0, float(exact.abs().max()))
        accepted = gap <= limit
        self.precision_check = {"precision": self.precision, "gap": gap, "accepted": accepted}
        if accepted:
            return reduced
        warnings.warn(
            f"{self.precision} differs from float32 by {gap:.3g} (limit {limit:.3g}) on this "
            "image: using float32",
            stacklevel=3,
        )
        return game

    def result(
        self, game: LayerGame, estimate, *, seed: int, seconds: float, path: str = "general"
    ) -> ShapCAMResult:
        """Package a ``ShapleyEstimate`` of ``game`` as a ``ShapCAMResult``.

        path: which path computed it, "fast" or "general".
        """
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
            path=path,
            seconds=seconds,
        )

    def batch_size(self, game: LayerGame) -> int:
        """Coalitions per batch such that the tail's outputs fit ``memory_budget``.

        On the CPU also at most about ``CPU_BATCH_BYTES`` (but at least ``CPU_MIN_BATCH``
        coalitions, budget permitting): cache-sized batches run fastest there.
        """
        per_sample = _tail_bytes_per_sample(game)
        size = self.memory_budget // max(per_sample, 1)
        if self.device.type == "cpu":
            size = min(size, max(CPU_MIN_BATCH, CPU_BATCH_BYTES // max(per_sample, 1)))
        return int(max(1, min(8192, size)))

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
