"""Shap-CAM (Zheng et al., ECCV 2022): Shapley values of a layer's spatial cells."""

import numbers
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ShapCAMError
from ..games import MAX_EXACT_PLAYERS, PermutationSampler, exact_shapley
from ..games.sampling import Progress, check_count, check_seed
from .fastpath import FastLayerGame, fast_batch_size
from .game import LayerGame, Target, layer_games
from .layers import SplitNetwork, eval_mode, model_device, resolve_layer
from .localpath import LocalLayerGame, local_batch_size
from .result import ShapCAMResult
from .structure import find_local_tail, find_position_wise_head

DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of extra memory per batch of coalitions
#: On the CPU, batches whose tail outputs stay near cache size run fastest (measured on
#: EfficientNet-Lite0: 0.4 ms per coalition at 16 per batch, 0.7 ms at 512).
CPU_BATCH_BYTES = 16 * 2**20
CPU_MIN_BATCH = 8  # below this, per-call overhead dominates (1.4x slower at 1 per call)
PATHS = ("auto", "fast", "local", "general")
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


@dataclass(frozen=True)
class _Plan:
    """How one game is valued: the value function, coalitions per call, and why."""

    value_fn: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int
    path: str  # "fast", "local" or "general"
    fast_path_reason: str  # "" when the fast path runs
    precision_check: dict | None


class ShapCAM:
    """Shap-CAM explainer for one layer of a CNN classifier.

    Holds the network cut at ``layer`` (one torch.fx trace); the game's settings (target,
    value, baseline, block size) are arguments of ``attribute`` and ``explain``, so one
    explainer serves them all. Every call runs the model in eval mode and restores each
    module's own mode afterwards; the model's parameters and buffers are never changed.

    model: a float32 torchvision or timm classifier (for half precision use
        ``precision="float16"``, not a float16 model).
    layer: a ``named_modules()`` name or the module itself; its output is N x C x h x w.
        None: ``default_layer(model)``, the last spatial layer before the global pool
        ("layer4" for ResNets, "features" for VGG, DenseNet, MobileNet, EfficientNet
        and ConvNeXt, "bn2" for timm's EfficientNets).
    device: None runs on the model's own device (its first parameter's); "cpu", "cuda"
        or "auto" (CUDA when present) move the model there (``model.to(device)``).
    path: "auto" uses the structured fast path when the network after ``layer`` is
        position-wise up to a global average pool and a linear classifier (the CAM
        identity), else the local path when it is position-wise, then local (stride-1
        convolutions), then position-wise up to the same pool and classifier (only the
        cells near the added one are recomputed along an ordering), else the general
        path (the book's Method notes describe the three). On a GPU "auto" skips the
        local path: measured there (``benchmarks/gpu.json``) it was slower than the
        general path. "fast" and "local" insist on theirs (error if the structure is
        missing), "general" always runs the network's tail per coalition.
        ``fast_path_reason`` and ``local_path_reason`` say why a structure is missing (""
        when it is there); each result's ``path`` and ``fast_path_reason`` say what ran
        for that image.
    precision: "float32", or "bfloat16" / "float16" to run the general path's tail under
        autocast (meant for GPUs). Each image first compares a few coalitions against
        float32 and falls back to float32, with a warning, when they differ by more than
        ``PRECISION_TOL``; the result's ``precision_check`` records the comparison. The
        fast path ignores it (it works in float64 from per-cell logits computed once),
        and so does the local path (float32, with float64 sums).
    memory_budget: bytes of extra memory one batch of coalitions may use.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None = None,
        *,
        device: str | torch.device | None = None,
        path: str = "auto",
        precision: str = "float32",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ):
        if path not in PATHS:
            raise ShapCAMError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
        if precision not in PRECISIONS:
            raise ShapCAMError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        check_count("memory_budget", memory_budget)
        _check_float32(model)
        if device is None:
            self.device = model_device(model)
        else:
            self.device = choose_device(device)
            model.to(self.device)
        self.model = model
        self.layer = resolve_layer(model, layer)
        self.network = SplitNetwork(model, self.layer)
        self.memory_budget = memory_budget
        #: (cells, block size) of the games whose local walk matched the general path
        self._local_checked: set[tuple] = set()
        self.path, self.precision = path, precision
        with eval_mode(model):  # the structure as it is in eval mode (batch norms)
            self.head, self.fast_path_reason = find_position_wise_head(self.network)
            self.local_tail, self.local_path_reason = find_local_tail(self.network)
        if path == "fast" and self.head is None:
            raise ShapCAMError(f"no fast path for layer {self.layer!r}: {self.fast_path_reason}")
        if path == "local" and self.local_tail is None:
            raise ShapCAMError(f"no local path for layer {self.layer!r}: {self.local_path_reason}")

    def game(
        self,
        inputs: torch.Tensor,
        target: Target = None,
        *,
        value: str | None = None,
        baseline: str = "zero",
        block_size: int = 1,
    ) -> LayerGame:
        """The cooperative game for one image (1 x 3 x H x W or 3 x H x W)."""
        images, _ = self._images(inputs, one=True)
        with eval_mode(self.model):
            return layer_games(
                self.network,
                images,
                [target],
                value=value,
                baseline=baseline,
                block_size=block_size,
            )[0]

    def attribute(
        self,
        inputs: torch.Tensor,
        target: Target | list[Target] = None,
        *,
        value: str | None = None,
        baseline: str = "zero",
        block_size: int = 1,
        n_samples: int = 128,
        seed: int = 0,
        antithetic: bool = True,
        exact: bool = False,
        tol: float | None = None,
        progress: Progress | None = None,
    ) -> ShapCAMResult | list[ShapCAMResult]:
        """Explain ``target`` for one image (3 x H x W or 1 x 3 x H x W: one result) or a
        batch (B x 3 x H x W: a list of B results, sharing the forward up to the layer).

        target: None (the top-1 class), a class index, pytorch-grad-cam's
            ``ClassifierOutputTarget(k)`` (class k, value "logit") or
            ``ClassifierOutputSoftmaxTarget(k)`` (class k, value "prob"), any callable f
            mapping one image's logits (K,) to a scalar (the value is then f(logits),
            ``result.value == "callable"`` and ``result.target`` None), or a list of
            those, one per image.
        value: "prob" (the class's softmax probability; the default) or "logit"; must
            be left unset with a callable target.
        baseline: what absent cells become: "zero", "mean" (per-channel spatial mean) or
            "blur" (the activation of a blurred copy of the input).
        block_size: group cells into block_size x block_size players (fewer players).
        n_samples: orderings to sample per image (rounded up to an even number when
            antithetic); every image's orderings come from ``seed``.
        exact: enumerate all 2^n coalitions instead (n <= 20 players).
        tol: stop sampling early once every standard error is below it (value units).
        progress: called as progress(done, total) while sampling, counted in orderings
            over the whole batch.
        """
        check_count("n_samples", n_samples)
        check_seed(seed)
        _check_tol(tol)
        images, single = self._images(inputs)
        targets = _targets(target, len(images))
        started = time.perf_counter()
        with eval_mode(self.model):
            games = layer_games(
                self.network, images, targets, value=value, baseline=baseline, block_size=block_size
            )
            shared = (time.perf_counter() - started) / len(games)
            per_image = n_samples + (n_samples % 2 if antithetic else 0)
            results = []
            for index, game in enumerate(games):
                started = time.perf_counter()
                plan = self._plan(game)
                if exact:
                    estimate = self._exact(game, plan)
                else:
                    report = None
                    if progress is not None:

                        def report(done, _total, offset=index * per_image):
                            progress(offset + done, len(games) * per_image)

                    estimate = self._sampler(game, plan, seed, antithetic).run(
                        n_samples, tol=tol, progress=report
                    )
                seconds = shared + time.perf_counter() - started
                results.append(_result(game, estimate, plan, seed=seed, seconds=seconds))
        return results[0] if single else results

    def explain(
        self,
        inputs: torch.Tensor,
        target: Target = None,
        *,
        value: str | None = None,
        baseline: str = "zero",
        block_size: int = 1,
        seed: int = 0,
        antithetic: bool = True,
    ) -> "Explanation":
        """An anytime explanation of one image: ``refine(m)`` adds m orderings at a time.

        The arguments are those of ``attribute``; nothing is sampled yet.
        """
        check_seed(seed)
        started = time.perf_counter()
        game = self.game(inputs, target, value=value, baseline=baseline, block_size=block_size)
        with eval_mode(self.model):
            plan = self._plan(game)
            sampler = self._sampler(game, plan, seed, antithetic)
        return Explanation(self, game, plan, sampler, seconds=time.perf_counter() - started)

    def _plan(self, game: LayerGame) -> _Plan:
        """How to value ``game``: the fast path when the structure is there and its check
        against the network's tail passes (under path="auto" a failed check falls back to
        the general path), else the local path likewise (its check, along one ordering,
        once per grid and block size; under path="auto" on the CPU only), else the general
        path, under autocast when asked for."""
        reason = self.fast_path_reason
        if self.head is not None and self.path in ("auto", "fast"):
            try:
                fast = FastLayerGame(game, self.head)
                fast.check()
            except ShapCAMError as error:
                if self.path == "fast":
                    raise
                reason = str(error)
            else:
                return _Plan(fast, fast_batch_size(fast, self.memory_budget), "fast", "", None)
        elif self.path in ("general", "local"):
            reason = f"path={self.path!r} was asked for"
        if self.local_tail is not None and (
            self.path == "local" or (self.path == "auto" and self.device.type == "cpu")
        ):
            try:
                local = LocalLayerGame(game, self.local_tail, self._batch_size(game))
                # locality is the tail's and the players', not the image's: checked once
                # per grid and block size
                grid = (game.cells, game.block_size)
                if grid not in self._local_checked:
                    local.check()
                    self._local_checked.add(grid)
            except ShapCAMError:
                if self.path == "local":
                    raise
            else:
                cpu = self.device.type == "cpu"
                batch = local_batch_size(game, local, self.memory_budget, cpu)
                return _Plan(local, batch, "local", reason, None)
        value_fn, check = game, None
        if self.precision != "float32":
            value_fn, check = self._reduced_precision(game)
        return _Plan(value_fn, self._batch_size(game), "general", reason, check)

    def _sampler(self, game: LayerGame, plan: _Plan, seed: int, antithetic: bool):
        return PermutationSampler(
            plan.value_fn,
            game.n_players,
            antithetic=antithetic,
            seed=seed,
            batch_size=plan.batch_size,
            device=self.device,
        )

    def _exact(self, game: LayerGame, plan: _Plan):
        if game.n_players > MAX_EXACT_PLAYERS:
            raise ShapCAMError(
                f"exact Shapley values need at most {MAX_EXACT_PLAYERS} players; this layer "
                f"has {game.n_players} ({game.blocks[0]}x{game.blocks[1]}): sample instead, or "
                "choose a block_size that leaves at most 20 blocks"
            )
        return exact_shapley(
            plan.value_fn, game.n_players, batch_size=plan.batch_size, device=self.device
        )

    def _reduced_precision(self, game: LayerGame) -> tuple[Callable, dict]:
        """(``game`` under autocast, or ``game`` itself when it disagrees with float32;
        the comparison)."""
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
        check = {"precision": self.precision, "gap": gap, "accepted": accepted}
        if accepted:
            return reduced, check
        warnings.warn(
            f"{self.precision} differs from float32 by {gap:.3g} (limit {limit:.3g}) on this "
            "image: using float32",
            stacklevel=4,
        )
        return game, check

    def _batch_size(self, game: LayerGame) -> int:
        """Coalitions per batch such that the tail's outputs fit ``memory_budget``.

        On the CPU also at most about ``CPU_BATCH_BYTES`` (but at least ``CPU_MIN_BATCH``
        coalitions, budget permitting): cache-sized batches run fastest there.
        """
        per_sample = _tail_bytes_per_sample(game)
        size = self.memory_budget // max(per_sample, 1)
        if self.device.type == "cpu":
            size = min(size, max(CPU_MIN_BATCH, CPU_BATCH_BYTES // max(per_sample, 1)))
        return int(max(1, min(8192, size)))

    def _images(self, inputs: torch.Tensor, *, one: bool = False) -> tuple[torch.Tensor, bool]:
        """(images N x 3 x H x W on the device as float32, whether one image was given)."""
        if not isinstance(inputs, torch.Tensor):
            raise ShapCAMError(f"inputs must be a torch.Tensor; got {type(inputs).__name__}")
        single = inputs.dim() == 3 or (inputs.dim() == 4 and len(inputs) == 1)
        if inputs.dim() == 3:
            inputs = inputs[None]
        if inputs.dim() != 4 or inputs.shape[1] != 3 or len(inputs) == 0 or (one and not single):
            expected = "one image" if one else "one image or a batch"
            shapes = "3 x H x W or 1 x 3 x H x W" + ("" if one else " or B x 3 x H x W")
            raise ShapCAMError(
                f"inputs must be {expected} of shape {shapes}; got {tuple(inputs.shape)}"
            )
        return inputs.to(self.device, torch.float32), single


class Explanation:
    """An anytime Shap-CAM explanation of one image, made by ``ShapCAM.explain``.

    ``refine(m)`` walks m more orderings (extending, never restarting, the earlier ones)
    and returns the map from all of them; ``result()`` returns the map of the refine
    calls finished so far. ``cancel()``, from any thread, stops a refine running in
    another one after its current batch of orderings (well under a second): that refine
    returns the partial result, and later refine calls return at once without sampling.
    One refine runs at a time (a second waits for the first).

    path, fast_path_reason, precision_check: how the game is valued (as on the results).
    batch_size: coalitions per call of the value function.
    """

    def __init__(self, explainer: ShapCAM, game: LayerGame, plan: _Plan, sampler, seconds):
        self._explainer, self._game, self._plan, self._sampler = explainer, game, plan, sampler
        self.path, self.batch_size = plan.path, plan.batch_size
        self.fast_path_reason, self.precision_check = plan.fast_path_reason, plan.precision_check
        self.seconds = seconds  # set-up and sampling so far
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._result: ShapCAMResult | None = None

    @property
    def n_orderings(self) -> int:
        """Orderings walked so far."""
        return self._sampler.n_orderings

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._cancelled.is_set()

    def refine(
        self, n_samples: int, *, tol: float | None = None, progress: Progress | None = None
    ) -> ShapCAMResult:
        """Walk ``n_samples`` more orderings (pairs when antithetic); the map from all.

        tol and progress as in ``ShapCAM.attribute``. After ``cancel()`` no sampling: the
        current result (ShapCAMError when there is none yet).
        """
        check_count("n_samples", n_samples)
        _check_tol(tol)
        with self._lock:
            if not self.cancelled:
                started = time.perf_counter()
                with eval_mode(self._explainer.model):
                    estimate = self._sampler.run(
                        n_samples, tol=tol, progress=progress, stop=self._cancelled.is_set
                    )
                self.seconds += time.perf_counter() - started
                self._result = _result(
                    self._game,
                    estimate,
                    self._plan,
                    seed=self._sampler.seed,
                    seconds=self.seconds,
                )
        return self.result()

    def result(self) -> ShapCAMResult:
        """The map from the orderings of the refine calls finished so far."""
        if self._result is None:
            if self.cancelled:
                raise ShapCAMError("the explanation was cancelled before any ordering was walked")
            raise ShapCAMError("the explanation has no orderings yet: call refine(n_samples) first")
        return self._result

    def cancel(self) -> None:
        """Stop sampling (thread-safe): a refine in progress ends after its batch."""
        self._cancelled.set()


def _result(game: LayerGame, estimate, plan: _Plan, *, seed: int, seconds: float):
    """A ``ShapleyEstimate`` of ``game`` as a ``ShapCAMResult``."""
    return ShapCAMResult(
        phi=estimate.values.reshape(game.blocks).numpy(),
        stderr=estimate.stderr.reshape(game.blocks).numpy(),
        v_full=estimate.v_full,
        v_empty=estimate.v_empty,
        target=game.target,
        layer=game.network.layer,
        value=game.value,
        baseline=game.baseline_name,
        method=estimate.method,
        n_orderings=estimate.n_orderings,
        n_evaluations=estimate.n_evaluations,
        seed=seed,
        block_size=game.block_size,
        cells=game.cells,
        input_size=tuple(game.input_size),
        path=plan.path,
        seconds=seconds,
        fast_path_reason=plan.fast_path_reason,
        precision_check=plan.precision_check,
    )


def _targets(target, n_images: int) -> list:
    """One target per image: a list of ``n_images`` targets, or one for every image."""
    if isinstance(target, (list, tuple)):
        if len(target) != n_images:
            raise ShapCAMError(
                f"target is a list of {len(target)} targets for {n_images} image(s): give "
                "one per image, or one target (an int, a callable or None) for all"
            )
        return list(target)
    return [target] * n_images


def _check_tol(tol) -> None:
    if tol is not None and not (isinstance(tol, numbers.Real) and tol > 0):
        raise ShapCAMError(f"tol must be a positive number or None; got {tol!r}")


def _check_float32(model: nn.Module) -> None:
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()} - {torch.float32}
    if dtypes:
        found = ", ".join(sorted(str(dtype).removeprefix("torch.") for dtype in dtypes))
        raise ShapCAMError(
            f"the model has {found} parameters; Shap-CAM runs float32 models: call "
            "model.float() first (and ShapCAM(..., precision='float16') or 'bfloat16' to "
            "run the tail in half precision under autocast)"
        )


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
